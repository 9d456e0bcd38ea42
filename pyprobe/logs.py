"""Log lines as Prometheus' exporters write them (go-kit's log, promlog):
logfmt,

    ts=2026-12-06T16:08:17.123Z caller=daemon.py:148 level=info msg="probe attached" probe=drops

or one JSON object a line (`--log.format json`). Times are RFC 3339 in UTC
with milliseconds, levels debug, info, warn and error. Call sites pass their
fields, never text they formatted themselves, so every value is quoted and
escaped the one right way:

    log.info("probe attached", extra=kv(probe=name, hook=hook))

A record without fields (a library's, or `log.debug("x %s", y)`) is its
message alone."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from typing import TextIO

from .errors import PyprobeError

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
CORE = ("ts", "caller", "level", "msg")  # every line's first keys, in this order


def kv(**fields: object) -> dict[str, dict[str, object]]:
    """The `extra` of a log call: its fields, in the order given."""
    return {"fields": fields}


def level_name(levelno: int) -> str:
    """Go's names: WARNING is warn, CRITICAL (which Go does not have) error."""
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    return "info" if levelno >= logging.INFO else "debug"


def timestamp(created: float) -> str:
    """RFC 3339 in UTC with milliseconds: 2026-12-06T16:08:17.123Z."""
    # Truncated like Go's, from microseconds: a float's error (.123 read as
    # .12299990654) must not take a millisecond off.
    seconds, micros = divmod(round(created * 1_000_000), 1_000_000)
    millis = micros // 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def pairs(record: logging.LogRecord) -> list[tuple[str, object]]:
    """ts, caller, level, msg, then the call's fields (a field named like
    one of those four is written with a leading underscore, not twice)."""
    out: list[tuple[str, object]] = [
        ("ts", timestamp(record.created)),
        ("caller", f"{record.filename}:{record.lineno}"),
        ("level", level_name(record.levelno)),
        ("msg", record.getMessage()),
    ]
    fields = getattr(record, "fields", None)
    if isinstance(fields, dict):
        out += [("_" + k if k in CORE else str(k), v) for k, v in fields.items()]
    if record.exc_info:
        out.append(("exc", logging.Formatter().formatException(record.exc_info)))
    return out


def _text(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)  # an exception: its message, as Go's err.Error()


def _escape(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    special = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c)
    if special:
        return special
    if c == " " or c.isprintable():
        return c
    return f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}"


def logfmt_value(value: object) -> str:
    """Bare where a logfmt reader takes it as it is; quoted, with \\ " and
    control characters escaped, where it is empty or has a space, = or ",
    a backslash (bare, some readers would unescape it) or anything not
    printable (a newline would split the line)."""
    text = _text(value)
    if text and not any(c <= " " or c in '="\\' or not c.isprintable() for c in text):
        return text
    return '"' + "".join(map(_escape, text)) + '"'


def logfmt_key(key: str) -> str:
    """A key is a bare word: what would end or split it becomes _."""
    return "".join("_" if c <= " " or c in '="' or not c.isprintable() else c for c in key) or "_"


def _json_value(value: object) -> object:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)  # JSON has no NaN
    return str(value)


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{logfmt_key(k)}={logfmt_value(v)}" for k, v in pairs(record))


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # ASCII only: a name with undecodable bytes (a lone surrogate) stays writable.
        return json.dumps(
            {k: _json_value(v) for k, v in pairs(record)}, allow_nan=False, separators=(",", ":")
        )


FORMATS: dict[str, type[logging.Formatter]] = {"logfmt": LogfmtFormatter, "json": JSONFormatter}


class _Handler(logging.StreamHandler):
    """Ours, so that setup() again replaces it instead of adding a second."""


def setup(level: str = "info", fmt: str = "logfmt", stream: TextIO | None = None) -> None:
    """Every logger's records (the root's) as `fmt` lines on stderr, from
    `level` up: node_exporter's --log.level and --log.format."""
    if level not in LEVELS:
        raise PyprobeError(f"bad --log.level {level!r}: one of {', '.join(LEVELS)}")
    if fmt not in FORMATS:
        raise PyprobeError(f"bad --log.format {fmt!r}: one of {', '.join(FORMATS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
    handler = _Handler(stream or sys.stderr)
    handler.setFormatter(FORMATS[fmt]())
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
