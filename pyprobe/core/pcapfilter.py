"""pcap-filter expressions for the trace program: compiled by libpcap
(pcap_compile, through ctypes on the system's libpcap.so.0.8) into classic
BPF, then translated here into C, one statement per instruction, for the
program to run over the bytes of a packet (bpf/trace_filter.h says how).

Each expression is compiled twice: for Ethernet (DLT_EN10MB: the packet
from its MAC header) and for raw IP (DLT_RAW: from its network header, for
devices without a link-layer header, and packets not at a device yet). An
expression one of them refuses (`ether host` on raw IP) matches nothing
there; one both refuse, or that the translation cannot keep exact, is one
line (PyprobeError): a backward jump (`ip6 protochain` loops), a load
beyond the bytes the program reads of each packet (PF_WINDOW), a Linux
socket-filter extension, a program too long for the verifier.

bpf_filter() is libpcap's own interpreter, for the tests to judge the
same bytes both ways.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import functools
import threading
from collections.abc import Sequence
from typing import NamedTuple

from ..errors import PyprobeError

DLT_EN10MB, DLT_RAW = 1, 12
LINKTYPES = {DLT_EN10MB: "ethernet", DLT_RAW: "raw IP"}
WINDOW = 256  # PF_WINDOW in bpf/trace_filter.h: the bytes of a packet the filter sees
MAX_INSNS = 4096  # longer programs are refused (the verifier's patience, and ours)
_NETMASK_UNKNOWN = 0xFFFFFFFF
_LOCK = threading.Lock()  # pcap_compile was not thread-safe before libpcap 1.8


class Insn(NamedTuple):
    code: int
    jt: int
    jf: int
    k: int


class _Insn(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_uint16),
        ("jt", ctypes.c_uint8),
        ("jf", ctypes.c_uint8),
        ("k", ctypes.c_uint32),
    ]


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.POINTER(_Insn))]


@functools.cache
def _libpcap() -> ctypes.CDLL:
    for name in ("libpcap.so.0.8", "libpcap.so.1", ctypes.util.find_library("pcap")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        lib.pcap_open_dead.restype = ctypes.c_void_p
        lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
        lib.pcap_compile.restype = ctypes.c_int
        lib.pcap_compile.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(_Program),
            ctypes.c_char_p,
            ctypes.c_int,
            ctypes.c_uint32,
        ]
        lib.pcap_geterr.restype = ctypes.c_char_p
        lib.pcap_geterr.argtypes = [ctypes.c_void_p]
        lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
        lib.pcap_close.argtypes = [ctypes.c_void_p]
        lib.bpf_filter.restype = ctypes.c_uint
        lib.bpf_filter.argtypes = [
            ctypes.POINTER(_Insn),
            ctypes.c_char_p,
            ctypes.c_uint,
            ctypes.c_uint,
        ]
        lib.pcap_lib_version.restype = ctypes.c_char_p
        return lib
    raise PyprobeError(
        "libpcap is not installed (pcap filters are compiled by it): apt-get install libpcap0.8"
    )


def version() -> str:
    return str(_libpcap().pcap_lib_version().decode())


def compile_bpf(expression: str, linktype: int, snaplen: int = 262144) -> list[Insn]:
    """libpcap's classic BPF for an expression (optimized, as tcpdump compiles
    it); its error as one line."""
    lib = _libpcap()
    with _LOCK:
        pcap = lib.pcap_open_dead(linktype, snaplen)
        if not pcap:
            raise PyprobeError("libpcap: pcap_open_dead failed")
        program = _Program()
        try:
            if lib.pcap_compile(
                pcap, ctypes.byref(program), expression.encode(), 1, _NETMASK_UNKNOWN
            ):
                detail = lib.pcap_geterr(pcap).decode(errors="replace")
                raise PyprobeError(f"filter {expression!r}: {detail}")
            insns = [
                Insn(i.code, i.jt, i.jf, i.k)
                for i in (program.bf_insns[n] for n in range(program.bf_len))
            ]
            lib.pcap_freecode(ctypes.byref(program))
        finally:
            lib.pcap_close(pcap)
    return insns


def bpf_filter(insns: Sequence[Insn], packet: bytes, wirelen: int | None = None) -> int:
    """libpcap's verdict (its interpreter) on a packet's bytes."""
    array = (_Insn * len(insns))(*(_Insn(*i) for i in insns))
    wire = len(packet) if wirelen is None else wirelen
    return int(_libpcap().bpf_filter(array, packet, wire, len(packet)))


# -- classic BPF -> C -----------------------------------------------------------------
# classes, sizes, modes, operations (linux/filter.h, pcap/bpf.h)
LD, LDX, ST, STX, ALU, JMP, RET, MISC = range(8)
_SIZE = {0x00: 4, 0x08: 2, 0x10: 1}
IMM, ABS, IND, MEM, LEN, MSH = 0x00, 0x20, 0x40, 0x60, 0x80, 0xA0
JA, JEQ, JGT, JGE, JSET = 0x00, 0x10, 0x20, 0x30, 0x40
SRC_X = 0x08
_ALU = {0x00: "+", 0x10: "-", 0x20: "*", 0x40: "|", 0x50: "&", 0xA0: "^"}
DIV, LSH, RSH, NEG, MOD = 0x30, 0x60, 0x70, 0x80, 0x90
_JUMP = {JEQ: "==", JGT: ">", JGE: ">="}
MEMWORDS = 16


class Untranslatable(PyprobeError):
    """A classic BPF program the translation cannot keep exact."""


def _load(size: int, offset: str, bound: str) -> str:
    """A checked load of `size` bytes at offset (a C expression) into A."""
    return f"if ({bound} + {size} > caplen) return 0; A = PF_LD{size * 8}({offset});"


def to_c(insns: Sequence[Insn], expression: str = "") -> str:
    """The body of `u32 f(const u8 *P_, u32 caplen, u32 wirelen)`: the
    filter's verdict (0: no match) on a packet's first caplen bytes."""
    what = f"filter {expression!r}" if expression else "filter"
    n = len(insns)
    if not 0 < n <= MAX_INSNS:
        raise Untranslatable(f"{what}: {n} instructions (at most {MAX_INSNS} are translated)")
    targets: set[int] = set()
    lines: list[str] = []
    uses_mem = False

    def target(i: int, offset: int) -> int:
        to = i + 1 + offset
        if offset < 0 or offset >= 0x80000000:
            raise Untranslatable(
                f"{what}: jumps backward (a loop, as `protochain` makes): not translated"
            )
        if to >= n:
            raise Untranslatable(f"{what}: jumps past its end (instruction {i})")
        return to

    def goto(i: int, to: int) -> str:
        if to == i + 1:
            return ""
        targets.add(to)
        return f"goto L{to};"

    def window(k: int, size: int) -> None:
        if k >= 0x80000000:
            raise Untranslatable(f"{what}: uses a Linux socket-filter extension (offset {k:#x})")
        if k + size > WINDOW:
            raise Untranslatable(
                f"{what}: reads byte {k + size - 1} of the packet; pyprobe reads the first {WINDOW}"
            )

    for i, (code, jt, jf, k) in enumerate(insns):
        cls, size, mode = code & 0x07, _SIZE.get(code & 0x18, 0), code & 0xE0
        op, src_x = code & 0xF0, bool(code & SRC_X)
        operand = "X" if src_x else f"{k}u"
        if cls in (LD, LDX) and mode in (ABS, IND, MSH) and not size:
            raise Untranslatable(f"{what}: instruction {i} ({code:#x}) is not classic BPF")
        if cls == LD and mode == ABS:
            window(k, size)
            stmt = _load(size, str(k), str(k))
        elif cls == LD and mode == IND:
            window(k, size)  # X adds to k: at least this far
            stmt = (
                f"o_ = (u64)X + {k}u; if (o_ + {size} > caplen) return 0; "
                f"o_ &= PF_MASK; A = PF_LD{size * 8}(o_);"
            )
        elif cls == LDX and mode == MSH:
            window(k, 1)
            stmt = f"if ({k} + 1 > caplen) return 0; X = (PF_LD8({k}) & 0xf) << 2;"
        elif cls in (LD, LDX) and mode == IMM:
            stmt = f"{'A' if cls == LD else 'X'} = {k}u;"
        elif cls in (LD, LDX) and mode == LEN:
            stmt = f"{'A' if cls == LD else 'X'} = wirelen;"
        elif cls in (LD, LDX) and mode == MEM:
            if k >= MEMWORDS:
                raise Untranslatable(f"{what}: scratch word {k} does not exist")
            uses_mem = True
            stmt = f"{'A' if cls == LD else 'X'} = M_[{k}];"
        elif cls in (ST, STX):
            if k >= MEMWORDS:
                raise Untranslatable(f"{what}: scratch word {k} does not exist")
            uses_mem = True
            stmt = f"M_[{k}] = {'A' if cls == ST else 'X'};"
        elif cls == ALU:
            stmt = _alu(op, src_x, k, operand, what, i)
        elif cls == JMP and op == JA:
            stmt = goto(i, target(i, k if k < 0x80000000 else k - (1 << 32))) or ";"
        elif cls == JMP and op in (JEQ, JGT, JGE, JSET):
            yes, no = target(i, jt), target(i, jf)
            cond = f"(A & {operand})" if op == JSET else f"(A {_JUMP[op]} {operand})"
            if yes == no:
                stmt = goto(i, yes) or ";"
            elif no == i + 1:
                stmt = f"if {cond} {goto(i, yes)}"
            elif yes == i + 1:
                stmt = f"if (!{cond}) {goto(i, no)}"
            else:
                stmt = f"if {cond} {goto(i, yes)} {goto(i, no)}"
        elif cls == RET:
            rval = code & 0x18
            if rval == 0x00:
                stmt = f"return {k}u;"
            elif rval == 0x10:
                stmt = "return A;"
            else:
                raise Untranslatable(f"{what}: instruction {i} ({code:#x}) is not classic BPF")
        elif cls == MISC and (code & 0xF8) in (0x00, 0x80):
            stmt = "X = A;" if (code & 0xF8) == 0x00 else "A = X;"
        else:
            raise Untranslatable(f"{what}: instruction {i} ({code:#x}) is not classic BPF")
        lines.append(stmt)
    if insns[-1].code & 0x07 != RET:
        raise Untranslatable(f"{what}: does not end with a return")
    body = [
        "u32 A = 0, X = 0; u64 o_ = 0;",
        *(["u32 M_[16] = {0};"] if uses_mem else []),
        *(f"{f'L{i}: ' if i in targets else ''}{stmt}" for i, stmt in enumerate(lines)),
    ]
    # Every path ends in a return; "(void)" keeps compilers from warning
    # about what one filter leaves unused.
    return "{ " + " ".join(body) + " (void)o_; (void)X; (void)caplen; (void)wirelen; return 0; }"


def _alu(op: int, src_x: bool, k: int, operand: str, what: str, i: int) -> str:
    if op in _ALU:
        return f"A = A {_ALU[op]} {operand};"
    if op in (DIV, MOD):
        sign = "/" if op == DIV else "%"
        if src_x:
            return f"if (X == 0) return 0; A = A {sign} X;"
        return "return 0;" if k == 0 else f"A = A {sign} {k}u;"
    if op in (LSH, RSH):
        sign = "<<" if op == LSH else ">>"
        if src_x:
            return f"A = X < 32 ? A {sign} X : 0;"
        return f"A = A {sign} {k}u;" if k < 32 else "A = 0;"
    if op == NEG:
        return "A = 0u - A;"
    raise Untranslatable(f"{what}: instruction {i} (ALU {op:#x}) is not classic BPF")


@dataclasses.dataclass(frozen=True)
class Filter:
    """An expression, as C for each link type the trace program reads
    packets at (None: libpcap refuses it there, and it matches nothing)."""

    expression: str
    ethernet: str | None
    raw: str | None
    insns: dict[int, list[Insn]]

    def cflags(self) -> list[str]:
        flags = []
        if self.ethernet is not None:
            flags.append(f"-DTRACE_FILTER_ETH={self.ethernet}")
        if self.raw is not None:
            flags.append(f"-DTRACE_FILTER_RAW={self.raw}")
        return flags


def compile_filter(expression: str) -> Filter:
    """An expression as C for both link types; one line when it cannot be."""
    text = expression.strip()
    if not text:
        raise PyprobeError(
            "an empty filter would trace every packet: give a pcap-filter expression "
            "(e.g. 'host 10.0.0.2 and tcp port 80'; see man pcap-filter)"
        )
    bodies: dict[int, str | None] = {}
    insns: dict[int, list[Insn]] = {}
    errors: dict[int, PyprobeError] = {}
    for linktype in (DLT_EN10MB, DLT_RAW):
        try:
            insns[linktype] = compile_bpf(text, linktype)
        except PyprobeError as e:
            errors[linktype], bodies[linktype] = e, None
            continue
        bodies[linktype] = to_c(insns[linktype], text)  # Untranslatable: the whole filter fails
    if not insns:
        raise errors[DLT_EN10MB]
    return Filter(text, bodies[DLT_EN10MB], bodies[DLT_RAW], insns)
