"""Typed reading of a TOML table (a probe manifest's), with errors that
name the file and the key: one clear line for a malformed manifest."""

from __future__ import annotations

from typing import Any

from ..errors import PyprobeError


class ManifestError(PyprobeError):
    pass


class Reader:
    """Typed access to a TOML table with errors that name file and key."""

    def __init__(self, source: str, table: dict[str, Any], where: str) -> None:
        self.source, self.table, self.where = source, table, where

    def _fail(self, key: str, what: str) -> ManifestError:
        at = f"{self.where}.{key}" if self.where else key
        return ManifestError(f"{self.source}: {at}: {what}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if key not in self.table:
            if default is ...:
                raise self._fail(key, "missing")
            return default
        value = self.table[key]
        if (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else "number"
            raise self._fail(key, f"expected {want}, got {type(value).__name__}")
        return value

    def choice(self, key: str, allowed: tuple[str, ...]) -> str:
        value = self.get(key, str)
        if value not in allowed:
            raise self._fail(key, f"{value!r} is not one of {', '.join(allowed)}")
        return value

    def strings(self, key: str) -> tuple[str, ...]:
        values = self.get(key, list, [])
        if not all(isinstance(v, str) for v in values):
            raise self._fail(key, "expected a list of strings")
        return tuple(values)

    def tables(self, key: str) -> list[Reader]:
        items = self.get(key, list, [])
        if not all(isinstance(i, dict) for i in items):
            raise self._fail(key, "expected a list of tables")
        return [Reader(self.source, t, f"{key}[{n}]") for n, t in enumerate(items)]

    def positive(self, key: str) -> int:
        value = self.get(key, int)
        if value <= 0:
            raise self._fail(key, "must be > 0")
        return value
