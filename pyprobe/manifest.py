"""Probe manifests (probes/<name>.toml): hooks, offsets, maps, event, metrics.

Parsed into frozen dataclasses and validated up front, so a malformed
manifest is one clear error naming the file and the key, never a KeyError
deep inside a probe.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Ubuntu 22.04): the same parser, as a package
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PyprobeError

# tp_btf: a raw tracepoint whose program sees BTF-typed arguments (pyprobe/tpbtf.py)
HOOK_KINDS = ("tp_btf", "raw_tracepoint", "tracepoint", "kprobe")
NEEDS = ("offsets", "btf")
MAP_TYPES = ("array", "percpu_array", "hash", "percpu_hash", "lru_hash", "ringbuf")
METRIC_TYPES = ("counter", "gauge", "histogram")
# A histogram's last bucket slot holds the sum of the observed values.
CPU_FIELD = "cpu"  # a label on this field splits a per-CPU map by CPU instead of summing


class ManifestError(PyprobeError):
    pass


@dataclass(frozen=True)
class Point:
    """One attach point of a hook: a tracepoint/kprobe and the function on it."""

    target: str
    function: str
    stream_only: bool = False  # attached only when the event stream is on
    min_args: int = 0  # raw tracepoints: arguments the program reads (checked in BTF)
    fields: tuple[str, ...] = ()  # tracepoints: format fields the program reads
    kind: str = ""  # when it differs from its hook's (e.g. a raw tracepoint helper)
    optional: bool = False  # skipped where this kernel lacks it, instead of ruling out the hook
    btf_id: int = 0  # tp_btf: the tracepoint's btf_trace_* type id, filled in before load


@dataclass(frozen=True)
class Hook:
    kind: str
    points: tuple[Point, ...]
    cflags: tuple[str, ...]
    needs: tuple[str, ...]
    why: str

    @property
    def target(self) -> str:
        return self.points[0].target

    @property
    def function(self) -> str:
        return self.points[0].function

    @property
    def label(self) -> str:
        """kind:target[+target...]; helpers attached only for the stream left out."""
        main = [p.target for p in self.points if not p.stream_only]
        return f"{self.kind}:" + "+".join(main or [self.points[0].target])


@dataclass(frozen=True)
class Offset:
    macro: str
    path: str
    size: int
    optional: bool


MAX_FRONT = 4096  # front slots of a map, at most


def front_size_ok(slots: int) -> bool:
    """A front's size: a power of two up to MAX_FRONT (0, none, is the caller's to allow)."""
    return 0 < slots <= MAX_FRONT and slots & (slots - 1) == 0


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: str
    entries: int
    stream_only: bool
    # Slots of a direct-mapped array in front of a per-CPU hash with 8-byte
    # keys (NAME_fkeys, NAME_front; see pyprobe_bpf.h); 0: none.
    front: int = 0

    @property
    def front_maps(self) -> tuple[str, ...]:
        """The two maps of its front: the keys holding the slots, the values."""
        return (f"{self.name}_fkeys", f"{self.name}_front") if self.front else ()


@dataclass(frozen=True)
class Label:
    name: str
    slots: int  # integer keys: this label's share of the key (key = a*slots_b + b)
    decoder: str
    field: str = ""  # struct keys: the key member it comes from


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    map: str
    help: str
    labels: tuple[Label, ...]
    scale: float = 1.0  # e.g. 1e-9: the map counts nanoseconds, the metric says seconds
    buckets: int = 0  # histograms: exp2 bucket slots per series (the last one is the sum)
    # maps with struct values: the member this metric reads; "NAME[]" an array
    # member, whose index splits into the histogram slot and the slots labels
    value: str = ""


@dataclass(frozen=True)
class EventSpec:
    struct: str
    ringbuf: str
    lost_map: str


@dataclass(frozen=True)
class Manifest:
    name: str
    summary: str
    path: Path
    program: Path
    hooks: tuple[Hook, ...]
    offsets: tuple[Offset, ...]
    maps: tuple[MapSpec, ...]
    event: EventSpec | None
    metrics: tuple[Metric, ...]


class _Reader:
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

    def tables(self, key: str) -> list[_Reader]:
        items = self.get(key, list, [])
        if not all(isinstance(i, dict) for i in items):
            raise self._fail(key, "expected a list of tables")
        return [_Reader(self.source, t, f"{key}[{n}]") for n, t in enumerate(items)]

    def positive(self, key: str) -> int:
        value = self.get(key, int)
        if value <= 0:
            raise self._fail(key, "must be > 0")
        return value


def parse(text: str, path: Path, bpf_dir: Path) -> Manifest:
    source = path.name
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{source}: not valid TOML: {e}") from None
    top = _Reader(source, doc, "")
    probe = _Reader(source, top.get("probe", dict), "probe")
    name = probe.get("name", str)
    if name != path.stem:
        raise ManifestError(f"{source}: probe.name {name!r} must match the file stem {path.stem!r}")
    program = bpf_dir / f"{path.stem}.bpf.c"

    hooks = tuple(
        Hook(
            kind=h.choice("kind", HOOK_KINDS),
            points=_points(h),
            cflags=h.strings("cflags"),
            needs=tuple(_check_needs(h)),
            why=h.get("why", str, ""),
        )
        for h in top.tables("hooks")
    )
    if not hooks:
        raise ManifestError(f"{source}: hooks: at least one hook is required")

    offsets = []
    for macro, spec in top.get("offsets", dict, {}).items():
        if not isinstance(spec, dict):
            raise ManifestError(f"{source}: offsets.{macro}: expected a table")
        o = _Reader(source, spec, f"offsets.{macro}")
        offsets.append(
            Offset(macro, o.get("path", str), o.positive("size"), o.get("optional", bool, False))
        )

    maps = tuple(
        MapSpec(
            m.get("name", str),
            m.choice("type", MAP_TYPES),
            m.positive("entries"),
            m.get("stream_only", bool, False),
            m.get("front", int, 0),
        )
        for m in top.tables("maps")
    )
    for spec in maps:
        if spec.front and (spec.type != "percpu_hash" or not front_size_ok(spec.front)):
            raise ManifestError(
                f"{source}: maps {spec.name}: front is a power of two up to {MAX_FRONT} (slots) "
                "and goes with type percpu_hash only"
            )
    map_names = {m.name for m in maps}

    event = None
    if "event" in doc:
        ev = _Reader(source, top.get("event", dict), "event")
        event = EventSpec(
            ev.get("struct", str), ev.get("ringbuf", str), ev.get("lost_map", str, "")
        )
        if event.lost_map and event.lost_map not in map_names:
            raise ManifestError(f"{source}: event.lost_map: no map named {event.lost_map!r}")

    metrics = []
    for m in top.tables("metrics"):
        labels = tuple(_label(lb) for lb in m.tables("labels"))
        metric = Metric(
            m.get("name", str),
            m.choice("type", METRIC_TYPES),
            m.get("map", str),
            m.get("help", str),
            labels,
            float(m.get("scale", (int, float), 1.0)),
            m.get("buckets", int, 0),
            m.get("value", str, ""),
        )
        if metric.map not in map_names:
            raise ManifestError(f"{source}: metrics {metric.name}: no map named {metric.map!r}")
        if (metric.type == "histogram") != (metric.buckets > 1):
            raise ManifestError(
                f"{source}: metrics {metric.name}: buckets (> 1) goes with type histogram only"
            )
        # Slots labels split an integer key, or the index of an array value
        # member (value = "NAME[]"; then beside a struct key's field labels).
        kinds = {bool(lb.field) for lb in labels if lb.field != CPU_FIELD}
        if not metric.value.endswith("[]") and len(kinds) > 1:
            raise ManifestError(
                f"{source}: metrics {metric.name}: labels use either field or slots, not both"
            )
        metrics.append(metric)

    return Manifest(
        name,
        probe.get("summary", str),
        path,
        program,
        hooks,
        tuple(offsets),
        maps,
        event,
        tuple(metrics),
    )


def _points(h: _Reader) -> tuple[Point, ...]:
    if "attach" not in h.table:
        return (_point(h),)
    points = tuple(_point(p) for p in h.tables("attach"))
    if not points:
        raise h._fail("attach", "at least one attach point is required")
    return points


def _point(p: _Reader) -> Point:
    return Point(
        p.get("target", str),
        p.get("function", str),
        p.get("stream_only", bool, False),
        p.get("min_args", int, 0),
        p.strings("fields"),
        p.choice("kind", HOOK_KINDS) if "kind" in p.table else "",
        p.get("optional", bool, False),
    )


def _label(lb: _Reader) -> Label:
    field = lb.get("field", str, "")
    slots = lb.get("slots", int, 0) if field else lb.positive("slots")
    return Label(lb.get("name", str), slots, lb.get("decoder", str, "uint"), field)


def _check_needs(h: _Reader) -> list[str]:
    needs = list(h.strings("needs"))
    for n in needs:
        if n not in NEEDS:
            raise h._fail("needs", f"{n!r} is not one of {', '.join(NEEDS)}")
    return needs


def load(path: Path, bpf_dir: Path) -> Manifest:
    manifest = parse(path.read_text(), path, bpf_dir)
    if not manifest.program.is_file():
        raise ManifestError(f"{path.name}: its program {manifest.program.name} is missing")
    return manifest
