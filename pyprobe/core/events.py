"""Event records, described once: bpf/pyprobe.h.

The header is what the BPF programs write (gcc checks it against the ctypes
layout made here, tests/unit/test_structs.py). It is parsed when first asked
for: each struct's members and offsets, as the C compiler lays them out
(natural alignment, the header's explicit padding), and its #defines (flag
bits, enum values). From that come the struct.Struct a ring buffer's
records are unpacked with, the ctypes mirror, and the names of the unpacked
fields, so a member added to the header reaches every reader.

How each field reads (a name, a decoder) is the manifest's `[event].fields`
(core/eventcode.py turns both into the decode and JSON functions, and the
C formatter of a busy stream, core/native.py).
"""

from __future__ import annotations

import ctypes
import functools
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PyprobeError
from ..paths import bpf_dir

HEADER = "pyprobe.h"
PREFIX = "PYPROBE_"
# C type -> (struct code, size); arrays of bytes unpack as one bytes value.
_TYPES = {
    "__u8": ("B", 1),
    "__u16": ("H", 2),
    "__u32": ("I", 4),
    "__u64": ("Q", 8),
    "char": ("c", 1),
}
_CTYPES: dict[str, Any] = {
    "__u8": ctypes.c_uint8,
    "__u16": ctypes.c_uint16,
    "__u32": ctypes.c_uint32,
    "__u64": ctypes.c_uint64,
    "char": ctypes.c_char,
}
_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_DEFINE = re.compile(r"^#define\s+(\w+)\s+(0x[0-9a-fA-F]+|\d+)\s*$", re.M)
_STRUCT = re.compile(r"\bstruct\s+(\w+)\s*\{(.*?)\}\s*;", re.S)
_MEMBER = re.compile(r"^(\w+)\s+(\w+)(?:\[(\w+)\])?$")


@dataclass(frozen=True)
class Member:
    name: str
    ctype: str  # __u8, __u16, __u32, __u64 or char
    count: int  # array length; 1 for a scalar
    offset: int

    @property
    def size(self) -> int:
        return _TYPES[self.ctype][1] * self.count

    @property
    def padding(self) -> bool:
        """Explicit padding (_pad...): laid out, never read."""
        return self.name.startswith("_")

    @property
    def is_bytes(self) -> bool:
        return self.count > 1 and self.ctype in ("__u8", "char")


@dataclass(frozen=True)
class Layout:
    """One struct of the header as the compiler lays it out."""

    name: str
    members: tuple[Member, ...]
    size: int

    @functools.cached_property
    def record(self) -> struct.Struct:
        """Unpacks a record to its fields (fields()), padding skipped."""
        parts, at = [], 0
        for m in self.members:
            parts.append("x" * (m.offset - at))
            code = _TYPES[m.ctype][0]
            if m.padding:
                parts.append(f"{m.size}x")
            elif m.is_bytes:
                parts.append(f"{m.count}s")
            elif m.count > 1:
                raise PyprobeError(f"{HEADER}: {self.name}.{m.name}: arrays of numbers unsupported")
            else:
                parts.append(code)
            at = m.offset + m.size
        parts.append("x" * (self.size - at))
        return struct.Struct("=" + "".join(parts))

    def fields(self) -> tuple[str, ...]:
        """The names of what record unpacks, in order."""
        return tuple(m.name for m in self.members if not m.padding)

    @functools.cached_property
    def ctype(self) -> type[ctypes.Structure]:
        """A ctypes mirror (what the tests compare with gcc's layout)."""
        fields = []
        for m in self.members:
            base = _CTYPES[m.ctype]
            fields.append((m.name, base * m.count if m.count > 1 else base))
        return type(self.name, (ctypes.Structure,), {"_fields_": fields})


@dataclass(frozen=True)
class Header:
    layouts: dict[str, Layout]
    constants: dict[str, int]  # the #defines, PYPROBE_ prefix removed

    def layout(self, name: str) -> Layout:
        try:
            return self.layouts[name]
        except KeyError:
            raise PyprobeError(f"{HEADER}: no struct {name}") from None

    def constant(self, name: str) -> int:
        try:
            return self.constants[name]
        except KeyError:
            raise PyprobeError(f"{HEADER}: no #define {PREFIX}{name}") from None

    def enum(self, prefix: str) -> dict[int, str]:
        """value -> name of the #defines PREFIX* (e.g. TCP_: reset_sent...)."""
        return {
            v: k.removeprefix(prefix).lower()
            for k, v in self.constants.items()
            if k.startswith(prefix)
        }


def parse(text: str) -> Header:
    text = _COMMENT.sub("", text)
    constants = {}
    for name, value in _DEFINE.findall(text):
        constants[name.removeprefix(PREFIX)] = int(value, 0)
    layouts = {}
    for name, body in _STRUCT.findall(text):
        members, at, align = [], 0, 1
        for decl in filter(None, (d.strip() for d in body.split(";"))):
            m = _MEMBER.match(" ".join(decl.split()))
            if m is None or m.group(1) not in _TYPES:
                raise PyprobeError(f"{HEADER}: struct {name}: cannot read member {decl!r}")
            ctype, member, count_text = m.groups()
            count = 1
            if count_text:
                count = (
                    int(count_text)
                    if count_text.isdigit()
                    else constants.get(count_text.removeprefix(PREFIX), 0)
                )
                if count <= 0:
                    raise PyprobeError(f"{HEADER}: {name}.{member}: unknown length {count_text}")
            size = _TYPES[ctype][1]
            at = -(-at // size) * size  # natural alignment, as gcc lays it out
            members.append(Member(member, ctype, count, at))
            at += size * count
            align = max(align, size)
        layouts[name] = Layout(name, tuple(members), -(-at // align) * align)
    return Header(layouts, constants)


@functools.cache
def header(directory: Path | None = None) -> Header:
    """bpf/pyprobe.h of this install (or of another bpf directory)."""
    path = (directory or bpf_dir()) / HEADER
    try:
        return parse(path.read_text())
    except OSError as e:
        raise PyprobeError(f"{path}: {e.strerror}") from None
