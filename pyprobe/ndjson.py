"""`tcpstates -j` in C: tcpstate_event records from the ring buffer's
mapping to NDJSON lines (native/tcpstates_ndjson.c), the bytes
TcpStates.json_lines writes.

Built at first use with the system's C compiler into the program cache
(objcache.directory()/native; with the cache off, for the process alone),
keyed by the source, the shared header and the compiler; loaded with ctypes. No compiler, another
architecture than x86 (ringbuf.available), or PYPROBE_NATIVE=off: library()
is None and the Python path stays. The C side hands back to Python what it
does not handle (NEW_NETNS: a namespace to name; HAND_BACK: one record).
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from functools import cache
from pathlib import Path

from . import objcache, paths, ringbuf

SOURCE = Path(__file__).with_name("native") / "tcpstates_ndjson.c"
_CAUGHT_UP, _OUT_FULL, _HAND_BACK, _NEW_NETNS = 0, 1, 2, 3
_OUT = 1 << 20  # bytes formatted per call: ~2,900 lines
_PROT_READ, _MAP_SHARED = 0x1, 0x01
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]  # fmt: skip
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _build(out: Path) -> bool:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    r = subprocess.run(
        [cc, "-O2", "-shared", "-fPIC", "-I", str(paths.bpf_dir()), "-o", str(tmp), str(SOURCE)],
        capture_output=True,
    )
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(out)  # atomic: a concurrent start loads one or the other whole
    return True


@cache
def library() -> ctypes.CDLL | None:
    if os.environ.get("PYPROBE_NATIVE") == "off" or not ringbuf.available():
        return None
    try:
        text = SOURCE.read_bytes() + (paths.bpf_dir() / "pyprobe.h").read_bytes()
    except OSError:
        return None
    cc = os.environ.get("CC", "cc")
    digest = hashlib.sha256(text + cc.encode()).hexdigest()[:16]
    name = f"tcpstates_ndjson-{digest}.so"
    home = objcache.directory()
    lib = None
    try:
        if home is not None:
            so = home / objcache.NATIVE / name
            lib = ctypes.CDLL(str(so)) if so.exists() or _build(so) else None
            if lib is not None:
                os.utime(so)  # used: kept by objcache.prune for another MAX_AGE_S
    except OSError:
        pass  # e.g. the cache not writable (CAP_BPF without root): build it for us alone
    try:
        if lib is None:  # no cache: built for this process, the file gone once loaded
            with tempfile.TemporaryDirectory(prefix="pyprobe-native-") as tmp:
                lib = ctypes.CDLL(str(Path(tmp) / name)) if _build(Path(tmp) / name) else None
    except OSError:
        return None
    if lib is None:
        return None
    fn = lib.pyprobe_tcpstates_ndjson
    fn.restype = ctypes.c_long
    fn.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_long, ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_uint32),
    ]  # fmt: skip
    return lib


class TcpStatesNdjson:
    """Takes over a RingReader of tcpstate_event records: each consume()
    formats what is there into `chunks` (bytes), in ring order."""

    def __init__(
        self,
        lib: ctypes.CDLL,
        reader: ringbuf.RingReader,
        states: Sequence[str],
        mono_to_wall_ns: int,
        netns_json: Callable[[int], str],
        slow: Callable[[bytes], str],
    ) -> None:
        self._fn = lib.pyprobe_tcpstates_ndjson
        self._reader = reader
        self._netns_json, self._slow = netns_json, slow
        self._mono_to_wall_ns = mono_to_wall_ns
        self._states_keep = [s.encode() for s in states]
        self._states = (ctypes.c_char_p * len(states))(*self._states_keep)
        length = mmap.PAGESIZE + 2 * reader.size
        # Our own read-only view: Python's mmap object gives no address.
        addr = _libc.mmap(None, length, _PROT_READ, _MAP_SHARED, reader.fd, mmap.PAGESIZE)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of the ring buffer failed")
        self._map, self._length = addr, length
        self._cons = ctypes.addressof(reader.consumer)
        self._out = ctypes.create_string_buffer(_OUT)
        self._why, self._inode = ctypes.c_int(), ctypes.c_uint32()
        self.chunks: list[bytes] = []
        reader.take_over(self.consume)

    def consume(self, reader: ringbuf.RingReader) -> int:
        # Names are asked for again each time (as json_lines does per batch):
        # a namespace may have been named since.
        ids: list[int] = []
        names: list[bytes] = []
        table: tuple = ((ctypes.c_uint32 * 1)(), (ctypes.c_char_p * 1)())
        handed = 0
        while True:
            n = self._fn(
                self._map, self._map + mmap.PAGESIZE, reader.mask, self._cons,
                self._mono_to_wall_ns, self._states, table[0], table[1], len(ids), self._out, _OUT,
                ctypes.byref(self._why), ctypes.byref(self._inode),
            )  # fmt: skip
            if n:
                self.chunks.append(ctypes.string_at(self._out, n))
                handed += 1
            why = self._why.value
            if why == _NEW_NETNS:
                ids.append(self._inode.value)
                names.append(self._netns_json(self._inode.value).encode())
                table = ((ctypes.c_uint32 * len(ids))(*ids), (ctypes.c_char_p * len(names))(*names))
            elif why == _HAND_BACK:
                raw = reader.take_one()
                if raw is not None:
                    self.chunks.append(self._slow(raw).encode())
                handed += 1
            elif why != _OUT_FULL:
                return handed

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out

    def close(self) -> None:
        self._reader.take_over(None)
        if self._map:
            _libc.munmap(self._map, self._length)
            self._map = 0
