"""Small text forms every layer above prints: a JSON line, an endpoint, a
clock time. (Tables are views/tables.py; a probe's own stream line is in
its plug-in.)"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any


def json_line(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=str)


_QUOTED: dict[str | None, str] = {None: "null"}


def quoted(text: str | None) -> str:
    """JSON for a string that repeats (comm, namespace name), cached."""
    out = _QUOTED.get(text)
    if out is None:
        if len(_QUOTED) > 65536:
            _QUOTED.clear()
            _QUOTED[None] = "null"
        out = _QUOTED[text] = json.dumps(text)
    return out


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


def hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def netns_cell(row: Mapping[str, Any]) -> str:
    """A namespace as tables and lines show it: its name, else its inode."""
    return row.get("netns_name") or str(row.get("netns") or "-")
