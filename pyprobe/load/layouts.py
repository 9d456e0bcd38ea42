"""A bcc table's layout (ctypes Key/Leaf types) as struct formats and member
names: what it takes to read the map by fd alone (load/maps.py), here or in
another process. bcc's objects come in; nothing here imports bcc."""

from __future__ import annotations

import contextlib
import ctypes
from typing import Any

from ..errors import PyprobeError
from ..kernel.bpf import map_sizes
from .maps import MapLayout

_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _struct_format(ctype: Any) -> str | None:
    """A struct format for an integer type or a struct of integers (bcc's
    Key/Leaf types), pads included; None for anything else. An array of
    integers is its elements in order (see members)."""
    if getattr(ctype, "_fields_", None) is None:
        code = _INT_CODES.get(ctypes.sizeof(ctype))
        is_int = issubclass(ctype, ctypes._SimpleCData) and ctype._type_ in "bBhHiIlLqQ"
        return code if code and is_int else None
    parts, at = [], 0
    for name, ftype, *bits in ctype._fields_:
        field = getattr(ctype, name)
        if name.startswith("__pad"):
            continue  # the padding bcc spells out: covered by the "x"s below
        element, count = _elements(ftype)
        sub = _struct_format(element)
        if bits or sub is None or len(sub) != 1 or field.offset < at:
            return None
        parts.append("x" * (field.offset - at) + sub * count)
        at = field.offset + field.size
    return "".join(parts) + "x" * (ctypes.sizeof(ctype) - at)


def _elements(ctype: Any) -> tuple[Any, int]:
    """(element type, how many) of a (nested) ctypes array; (ctype, 1) otherwise."""
    count = 1
    while (
        hasattr(ctype, "_length_") and hasattr(ctype, "_type_") and isinstance(ctype._type_, type)
    ):
        count *= ctype._length_
        ctype = ctype._type_
    return ctype, count


def members(ctype: Any) -> tuple[str, ...]:
    """Member names; an array member's elements are NAME[0], NAME[1], ...
    (a 2-D array's flattened: index = row * columns + column)."""
    out: list[str] = []
    for name, ftype, *_ in getattr(ctype, "_fields_", None) or ():
        if name.startswith("__pad"):
            continue
        _, count = _elements(ftype)
        is_array = hasattr(ftype, "_length_") and isinstance(getattr(ftype, "_type_", None), type)
        out += [f"{name}[{i}]" for i in range(count)] if is_array else [name]
    return tuple(out)


def layout_of(name: str, table: Any) -> MapLayout | None:
    """A bcc table's layout, for reading it by fd alone; None when its key or
    value is not integers (bcc's own reads serve those)."""
    sleaf = getattr(table, "sLeaf", None)
    leaf = sleaf if sleaf is not None else table.Leaf
    key_fmt, leaf_fmt = _struct_format(table.Key), _struct_format(leaf)
    if key_fmt is None or leaf_fmt is None:
        return None
    ncpu = 1
    if sleaf is not None:
        if ctypes.sizeof(sleaf) % 8:  # the kernel pads per-CPU values to 8
            return None
        ncpu = ctypes.sizeof(table.Leaf) // ctypes.sizeof(sleaf)
    # bcc mirrors the C types from its own reading of them; where it cannot
    # (a 2-D array became 2 elements) every read would be garbage: refuse.
    sizes = (ctypes.sizeof(table.Key), ctypes.sizeof(leaf))
    with contextlib.suppress(OSError, AttributeError):
        if map_sizes(table.map_fd) != sizes:
            raise PyprobeError(
                f"map {name}: bcc describes its key and value as {sizes[0]} and {sizes[1]} "
                f"bytes, the kernel holds {map_sizes(table.map_fd)}: a type bcc "
                "cannot mirror (a 2-D array?)"
            )
    return MapLayout(
        name=name,
        key_fmt=key_fmt,
        leaf_fmt=leaf_fmt,
        ncpu=ncpu,
        capacity=int(table.max_entries),
        key_fields=members(table.Key),
        leaf_fields=members(leaf),
    )
