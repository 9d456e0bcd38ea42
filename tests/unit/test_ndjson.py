"""The C formatter of `tcpstates -j` (pyprobe/native/tcpstates_ndjson.c)
against the Python one, on a ring buffer laid out in memory as the kernel
lays it out: the same bytes, record for record, including what C hands back
to Python (a namespace to name, a comm that is not ASCII, a record of
another size)."""

import ctypes
import socket
import struct

import pytest

from pyprobe import ndjson
from pyprobe.probes.tcpstates import _EVENT, _MONO_TO_WALL_NS, _STATE_TEXT, TcpStates
from pyprobe.render import quoted
from pyprobe.structs import F_BYTES_KNOWN, F_DELTA_KNOWN, F_LIFE_KNOWN, F_OWNER_KNOWN

BUSY, DISCARD, PAGE = 1 << 31, 1 << 30, 4096
SIZE = 1 << 14  # data bytes: records wrap within a test
NAMES = {4026531833: 'ns"x', 4026532000: "lab"}


def netns_json(inode: int) -> str:
    return quoted(NAMES.get(inode))


class FakeRing:
    """Producer page, then the data twice in a row (the kernel maps the
    data pages twice, so a record that wraps reads as contiguous)."""

    def __init__(self) -> None:
        self.mem = ctypes.create_string_buffer(PAGE + 2 * SIZE)
        self.cons = ctypes.c_uint64(0)
        self.prod = 0

    def put(self, sample: bytes, flags: int = 0) -> None:
        stride = (len(sample) + 8 + 7) & ~7
        record = (
            struct.pack("<II", len(sample) | flags, 0) + sample + bytes(stride - 8 - len(sample))
        )
        at = self.prod % SIZE
        first = record[: SIZE - at]
        for copy in (PAGE, PAGE + SIZE):
            ctypes.memmove(ctypes.addressof(self.mem) + copy + at, first, len(first))
            if len(first) < len(record):  # wraps: the rest at the start of each copy
                rest = record[len(first) :]
                ctypes.memmove(ctypes.addressof(self.mem) + copy, rest, len(rest))
        self.prod += stride
        struct.pack_into("<Q", self.mem, 0, self.prod)

    def take_one(self) -> bytes | None:  # RingReader.take_one, for the hand-backs
        while self.cons.value < self.prod:
            at = PAGE + self.cons.value % SIZE
            length = struct.unpack_from("<I", self.mem, at)[0]
            if length & BUSY:
                return None
            size = length & ~DISCARD
            self.cons.value += (size + 8 + 7) & ~7
            if not length & DISCARD:
                return self.mem.raw[at + 8 : at + 8 + size]
        return None


def event(i: int, **kw) -> bytes:
    v4 = socket.inet_aton(f"10.0.{i % 250}.{i % 7}") + bytes(12)
    fields = dict(
        ts=1_000_000_000 * i + 123_457 * i, skaddr=0xFFFF888000000000 + i * 64,
        delta=(i * 7919) % 3_000_000_000, life=(i * 104729) % 10**12, rx=i * 1461,
        tx=(1 << 64) - 1 - i, pid=1000 + i, netns=4026531833,
        saddr=v4, daddr=v4[::-1][12:] + bytes(12), sport=40000 + i, dport=443,
        family=2, old=1 + i % 12, new=1 + (i + 3) % 12,
        flags=(F_OWNER_KNOWN if i % 3 else 0) | (F_DELTA_KNOWN if i % 5 else 0)
        | (F_LIFE_KNOWN if i % 4 else 0) | (F_BYTES_KNOWN if i % 6 == 0 else 0),
        comm=b"churn" + bytes(11),
    )  # fmt: skip
    fields.update(kw)
    return _EVENT.pack(*fields.values())


def python_lines(samples: list[bytes]) -> bytes:
    rows = [(len(s), *_EVENT.unpack_from(s)) for s in samples if len(s) == _EVENT.size]
    return TcpStates.json_lines(rows, netns_json).encode()


def drain(ring: FakeRing) -> bytes:
    lib = ndjson.library()
    if lib is None:
        pytest.skip("no C compiler here: the Python path is the one in use")
    fn = lib.pyprobe_tcpstates_ndjson
    states = (ctypes.c_char_p * 256)(*[s.encode() for s in _STATE_TEXT])
    out = ctypes.create_string_buffer(1 << 16)
    why, inode = ctypes.c_int(), ctypes.c_uint32()
    ids: list[int] = []
    names: list[bytes] = []
    text = b""
    base = ctypes.addressof(ring.mem)
    for _ in range(10_000):
        n = fn(base, base + PAGE, SIZE - 1, ctypes.addressof(ring.cons), _MONO_TO_WALL_NS, states,
               (ctypes.c_uint32 * max(1, len(ids)))(*ids),
               (ctypes.c_char_p * max(1, len(names)))(*names), len(ids), out, len(out),
               ctypes.byref(why), ctypes.byref(inode))  # fmt: skip
        text += out.raw[:n]
        if why.value == 3:
            ids.append(inode.value)
            names.append(netns_json(inode.value).encode())
        elif why.value == 2:
            raw = ring.take_one()
            if raw is not None and len(raw) == _EVENT.size:
                text += python_lines([raw])
        elif why.value == 0:
            return text
    raise AssertionError("the formatter did not catch up")


def test_same_bytes_as_python_over_a_wrapping_ring():
    ring, samples = FakeRing(), []
    for i in range(1, 400):  # ~45 KB through a 16 KB ring: it wraps
        s = event(i, netns=(4026531833, 4026532000, 77)[i % 3])
        ring.put(s)
        samples.append(s)
        if i % 50 == 0:
            assert drain(ring) == python_lines(samples)
            samples = []
    assert drain(ring) == python_lines(samples)
    assert ring.cons.value == ring.prod


def test_what_c_hands_back_comes_out_the_same():
    odd = [
        event(1, comm=b'cu"rl\\\x01\x7f\n\t' + bytes(6)),  # escapes C does itself
        event(2, comm="żółw".encode() + bytes(8)),  # not ASCII: Python's
        event(
            3,
            family=10,
            saddr=socket.inet_pton(socket.AF_INET6, "fe80::1"),
            daddr=socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.1"),
        ),
        event(4, old=0, new=250, flags=0),  # NONE, UNKNOWN_250, no delta
        event(5, delta=10, flags=F_DELTA_KNOWN),  # ms 0.00000000010
        event(6, delta=0, flags=F_DELTA_KNOWN),  # ms 0.000000
        event(7, delta=(1 << 64) - 1, flags=F_DELTA_KNOWN),  # ms 18446744073709.551615
        event(8, ts=0, skaddr=0),  # 0x0
    ]
    ring = FakeRing()
    for s in odd:
        ring.put(s)
    ring.put(b"x" * 24)  # another size: handed back, skipped by both
    ring.put(event(9), flags=DISCARD)  # discarded: skipped
    ring.put(event(10))
    assert drain(ring) == python_lines([*odd, event(10)])


def test_a_busy_record_stops_the_run_until_submitted():
    ring = FakeRing()
    ring.put(event(1))
    ring.put(event(2), flags=BUSY)
    assert drain(ring) == python_lines([event(1)])
    at = ring.cons.value
    assert at < ring.prod  # the busy record is not consumed
    struct.pack_into("<I", ring.mem, PAGE + at % SIZE, _EVENT.size)  # submitted
    struct.pack_into("<I", ring.mem, PAGE + SIZE + at % SIZE, _EVENT.size)
    assert drain(ring) == python_lines([event(2)])


def test_it_is_built_where_there_is_a_compiler():
    """`make setup` installs gcc: on this kind of machine the C path is the
    one `tcpstates -j` takes (PYPROBE_NATIVE=off forces Python's)."""
    import shutil

    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    assert ndjson.library() is not None


def test_an_unwritable_cache_builds_it_for_the_process(tmp_path, monkeypatch):
    """CAP_BPF without root cannot write the program cache: the formatter is
    then built in a temporary directory (gone once loaded), not given up."""
    import shutil

    if shutil.which("cc") is None:
        pytest.skip("no C compiler")
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where the cache directory would be
    monkeypatch.setenv("PYPROBE_PROGRAM_CACHE", str(blocked / "programs"))
    ndjson.library.cache_clear()
    try:
        assert ndjson.library() is not None
        assert not (blocked.parent / "programs").exists()
    finally:
        ndjson.library.cache_clear()
