"""The BTF reader on a hand-built blob: anonymous unions, nesting, bitfields, typedefs."""

import struct

import pytest

from pyprobe.kernel.btf import BTF, BTFError

INT, PTR, STRUCT, UNION, TYPEDEF, ENUM = 1, 2, 4, 5, 8, 6


class Blob:
    def __init__(self):
        self.strings = b"\0"
        self.types = b""
        self.next_id = 1

    def s(self, text: str) -> int:
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name, kind, vlen, size_type, extra=b"", kind_flag=0) -> int:
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name) if name else 0, info, size_type) + extra
        tid, self.next_id = self.next_id, self.next_id + 1
        return tid

    def member(self, name, tid, bit_off):
        return struct.pack("<III", self.s(name) if name else 0, tid, bit_off)

    def bytes(self) -> bytes:
        hdr = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return hdr + self.types + self.strings


def build() -> bytes:
    b = Blob()
    u16 = b.add("unsigned short", INT, 0, 2, struct.pack("<I", 16))
    u32 = b.add("unsigned int", INT, 0, 4, struct.pack("<I", 32))
    net = b.add("net", STRUCT, 1, 64, b.member("inum", u32, 32 * 8))
    pnet = b.add("", PTR, 0, net)
    possible = b.add("", STRUCT, 1, 8, b.member("net", pnet, 0))
    possible_t = b.add("possible_net_t", TYPEDEF, 0, possible)
    inner = b.add("", STRUCT, 2, 4, b.member("daddr", u16, 0) + b.member("saddr", u16, 16))
    anon = b.add("", UNION, 2, 4, b.member("pair", u32, 0) + b.member("", inner, 0))
    b.add(
        "sk",
        STRUCT,
        4,
        24,
        b.member("", anon, 0)
        + b.member("family", u16, 32)
        + b.member("skc_net", possible_t, 64)
        + b.member("flags", u32, (3 << 24) | 128),
        kind_flag=1,
    )
    b.add(
        "state", ENUM, 2, 4, struct.pack("<Ii", b.s("ONE"), 1) + struct.pack("<Ii", b.s("TWO"), 2)
    )
    b.add("btf_trace_x", TYPEDEF, 0, u32)
    return b.bytes()


def test_nested_anonymous_and_typedef_paths():
    btf = BTF(build())
    assert btf.field("sk.family").offset == 4 and btf.field("sk.family").size == 2
    assert btf.field("sk.saddr").offset == 2  # through an anonymous union and struct
    assert btf.field("sk.skc_net.net").offset == 8 and btf.field("sk.skc_net.net").size == 8
    assert btf.field("net.inum").offset == 32
    assert btf.field("sk.flags").bitfield
    assert btf.has_type("btf_trace_x") and not btf.has_type("btf_trace_y")
    assert btf.enum("state") == {1: "ONE", 2: "TWO"}


def test_errors_are_btf_errors():
    btf = BTF(build())
    with pytest.raises(BTFError, match="no member 'nope'"):
        btf.field("sk.nope")
    with pytest.raises(BTFError, match="struct absent not in BTF"):
        btf.field("absent.x")
    with pytest.raises(BTFError, match="not a little-endian BTF blob"):
        BTF(b"\0" * 32)
