"""Minimal reader of the kernel's BTF (/sys/kernel/btf/vmlinux, under the host's sysfs).

Only what pyprobe needs: member offsets/sizes along a dotted path such as
"sock_common.skc_net.net" (descending into anonymous unions and structs), and
whether a named type exists (e.g. btf_trace_<tp>, which marks a raw
tracepoint). Offsets from BTF are the running kernel's, unlike those of
mismatched headers.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .host import host

_MAGIC = 0xEB9F
# kinds
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC, _FUNC_PROTO, _VAR, _DATASEC, _FLOAT = (
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
)
_DECL_TAG, _TYPE_TAG, _ENUM64 = 17, 18, 19
# Bytes that follow a btf_type, by kind: (fixed, per vlen entry).
_TRAILER = {
    _INT: (4, 0),
    _ARRAY: (12, 0),
    _STRUCT: (0, 12),
    _UNION: (0, 12),
    _ENUM: (0, 8),
    _FUNC_PROTO: (0, 8),
    _VAR: (4, 0),
    _DATASEC: (0, 12),
    _DECL_TAG: (4, 0),
    _ENUM64: (0, 12),
}
_MODIFIERS = {_TYPEDEF, _VOLATILE, _CONST, _RESTRICT, _TYPE_TAG}


class BTFError(Exception):
    pass


@dataclass(frozen=True)
class Field:
    offset: int  # bytes from the start of the outermost struct
    size: int  # bytes
    bitfield: bool


class BTF:
    def __init__(self, data: bytes) -> None:
        magic, _ver, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from(
            "<HBBIIIII", data, 0
        )
        if magic != _MAGIC:
            raise BTFError("not a little-endian BTF blob")
        self._data = data
        self._types_at = hdr_len + type_off
        self._strs_at = hdr_len + str_off
        self._offsets: list[int] = [0]  # type id -> byte offset of its btf_type; id 0 is void
        self._by_name: dict[str, list[int]] = {}
        self._index(self._types_at, self._types_at + type_len)

    @classmethod
    def load(cls, path: Path | None = None) -> BTF:
        return cls((path or host().btf).read_bytes())

    # -- parsing -------------------------------------------------------------
    def _index(self, pos: int, end: int) -> None:
        data = self._data
        unpack = struct.unpack_from
        while pos < end:
            name_off, info, _ = unpack("<III", data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            tid = len(self._offsets)
            self._offsets.append(pos)
            if name_off and kind in (_STRUCT, _UNION, _TYPEDEF, _ENUM, _ENUM64, _INT):
                self._by_name.setdefault(self._str(name_off), []).append(tid)
            fixed, per_member = _TRAILER.get(kind, (0, 0))
            pos += 12 + fixed + per_member * vlen

    def _str(self, off: int) -> str:
        start = self._strs_at + off
        return self._data[start : self._data.index(b"\0", start)].decode()

    def _type(self, tid: int) -> tuple[int, int, int, int, int]:
        """(name_off, kind, vlen, kind_flag, size_or_type) of type id."""
        name_off, info, size_type = struct.unpack_from("<III", self._data, self._offsets[tid])
        return name_off, (info >> 24) & 0x1F, info & 0xFFFF, info >> 31, size_type

    def _resolve(self, tid: int) -> int:
        """Skip typedefs and qualifiers."""
        while True:
            _, kind, _, _, ref = self._type(tid)
            if kind not in _MODIFIERS:
                return tid
            tid = ref

    def _size(self, tid: int) -> int:
        tid = self._resolve(tid)
        _, kind, _, _, size_type = self._type(tid)
        if kind in (_INT, _STRUCT, _UNION, _ENUM, _ENUM64, _FLOAT):
            return size_type
        if kind == _PTR:
            return 8
        if kind == _ARRAY:
            elem, _index, nelems = struct.unpack_from("<III", self._data, self._offsets[tid] + 12)
            return self._size(elem) * nelems
        raise BTFError(f"type {tid} of kind {kind} has no size")

    # -- queries -------------------------------------------------------------
    def has_type(self, name: str) -> bool:
        return name in self._by_name

    def struct_id(self, name: str) -> int:
        for tid in self._by_name.get(name, []):
            _, kind, vlen, _, _ = self._type(tid)
            if kind in (_STRUCT, _UNION) and vlen:
                return tid
            if kind == _TYPEDEF:
                rid = self._resolve(tid)
                if self._type(rid)[1] in (_STRUCT, _UNION):
                    return rid
        raise BTFError(f"struct {name} not in BTF")

    def _members(self, tid: int):
        _, kind, vlen, kind_flag, _ = self._type(tid)
        if kind not in (_STRUCT, _UNION):
            raise BTFError(f"type {tid} is not a struct or union")
        base = self._offsets[tid] + 12
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._data, base + 12 * i)
            bit_off = off & 0xFFFFFF if kind_flag else off
            bit_size = off >> 24 if kind_flag else 0
            yield (self._str(name_off) if name_off else ""), mtype, bit_off, bit_size

    def _find(self, tid: int, name: str) -> tuple[int, int, int] | None:
        """(member type, bit offset, bitfield size) of name in tid, through anonymous members."""
        for mname, mtype, bit_off, bit_size in self._members(tid):
            if mname == name:
                return mtype, bit_off, bit_size
            if not mname:
                inner = self._resolve(mtype)
                if self._type(inner)[1] in (_STRUCT, _UNION):
                    found = self._find(inner, name)
                    if found:
                        return found[0], bit_off + found[1], found[2]
        return None

    def field(self, path: str) -> Field:
        """Offset and size of a dotted path: "struct.member[.member...]"."""
        struct_name, *members = path.split(".")
        if not members:
            raise BTFError(f"{path}: expected struct.member")
        tid = self.struct_id(struct_name)
        bits = 0
        mtype, bit_size = tid, 0
        for i, member in enumerate(members):
            found = self._find(tid, member)
            if found is None:
                raise BTFError(f"{path}: no member {member!r}")
            mtype, bit_off, bit_size = found
            bits += bit_off
            if i < len(members) - 1:
                tid = self._resolve(mtype)
                if self._type(tid)[1] not in (_STRUCT, _UNION):
                    raise BTFError(f"{path}: {member!r} is not a struct")
        if bits % 8 or bit_size:
            return Field(bits // 8, 0, True)
        return Field(bits // 8, self._size(mtype), False)

    def raw_tp_id(self, name: str) -> int:
        """Type id of raw tracepoint `name`'s btf_trace_<name> typedef (0 when
        it does not exist): what a tp_btf program is loaded against."""
        for tid in self._by_name.get(f"btf_trace_{name}", []):
            if self._type(tid)[1] == _TYPEDEF:
                return tid
        return 0

    def raw_tp_args(self, name: str) -> int:
        """How many arguments raw tracepoint `name` passes (0 when it does not exist).

        btf_trace_<name> is a typedef of a pointer to the probe's prototype,
        whose first parameter is the tracepoint's private data, not an argument.
        """
        for tid in self._by_name.get(f"btf_trace_{name}", []):
            ptr = self._resolve(tid)
            _, kind, _, _, ref = self._type(ptr)
            if kind == _PTR:
                _, pkind, vlen, _, _ = self._type(ref)
                if pkind == _FUNC_PROTO:
                    return max(vlen - 1, 0)
        return 0

    def enum(self, name: str) -> dict[int, str]:
        """Values of a named enum (e.g. skb_drop_reason)."""
        for tid in self._by_name.get(name, []):
            _, kind, vlen, kind_flag, _ = self._type(tid)
            if kind == _ENUM:
                base = self._offsets[tid] + 12
                fmt = "<Ii" if kind_flag else "<II"
                return {
                    struct.unpack_from(fmt, self._data, base + 8 * i)[1]: self._str(
                        struct.unpack_from("<I", self._data, base + 8 * i)[0]
                    )
                    for i in range(vlen)
                }
        raise BTFError(f"enum {name} not in BTF")
