"""Compile and attach in a child process; keep only the file descriptors.

Most of the daemon's memory was bcc's: importing it maps clang and LLVM, and
compiling seven programs leaves ~90 MB of heap and touched library pages
that a long-lived process keeps (measured: 179-195 MB RSS, 29 MB without
bcc). The kernel holds a program, its maps and its attachments by file
descriptor, so a forked child imports bcc, compiles, loads and attaches,
and sends the descriptors back over a Unix socket (SCM_RIGHTS); the daemon
reads maps with its own bpf() calls (bpfmaps) and detaches by closing them.
The child never detaches: it leaves with os._exit, skipping bcc's atexit
clean-up, whose PERF_EVENT_IOC_DISABLE would switch off the parent's
tracepoint and kprobe events too.

Streams (the CLI's) still load in process: they need bcc's ring buffer reader.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import socket
from collections.abc import Sequence
from pathlib import Path

from . import manifest as manifest_mod
from .bpfmaps import Key, MapReader
from .errors import PyprobeError
from .loader import BccLoader, Exported, RingbufCallback
from .manifest import Hook
from .paths import bpf_dir, probes_dir

_PR_SET_PDEATHSIG = 1
_MAX_FDS = 250  # SCM_MAX_FD is 253
_MAX_MESSAGE = 1 << 20


class RemoteProgram:
    """A program another process loaded: its maps, functions and links, by fd."""

    def __init__(self, exported: Exported, fds: list[int]) -> None:
        self.hook = exported.hook
        self._fds = fds
        nmaps, nfuncs = len(exported.maps), len(exported.functions)
        self._readers = {
            layout.name: MapReader(fd, layout)
            for layout, fd in zip(exported.maps, fds[:nmaps], strict=True)
        }
        self._functions = dict(zip(exported.functions, fds[nmaps : nmaps + nfuncs], strict=True))

    def _reader(self, map_name: str) -> MapReader:
        try:
            return self._readers[map_name]
        except KeyError:
            raise KeyError(map_name) from None

    def read_counts(self, map_name: str, per_cpu: bool = False) -> dict[Key, int]:
        return self._reader(map_name).read(per_cpu)

    def key_fields(self, map_name: str) -> tuple[str, ...]:
        return self._reader(map_name).layout.key_fields

    def leaf_fields(self, map_name: str) -> tuple[str, ...]:
        return self._reader(map_name).layout.leaf_fields

    def delete_keys(self, map_name: str, keys: list[Key]) -> None:
        self._reader(map_name).delete(keys)

    def program_fds(self) -> dict[str, int]:
        return dict(self._functions)

    def map_usage(self, names: list[str]) -> list[tuple[str, int, int]]:
        return [(n, self._readers[n].count(), self._readers[n].cap) for n in names]

    def open_ringbuf(self, map_name: str, callback: RingbufCallback) -> None:
        raise PyprobeError("streams are read in the process that loaded them")

    def poll(self, timeout_ms: int) -> None:
        raise PyprobeError("streams are read in the process that loaded them")

    def close(self) -> None:
        fds, self._fds = self._fds, []
        for fd in fds:  # the links first would be tidier; the kernel does not mind
            os.close(fd)


class ForkLoader:
    """Loads through one child process, started at the first load and ended
    by close() (the daemon closes it once every probe is attached)."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._pid = 0

    def load(self, source: Path, hook: Hook, cflags: list[str]) -> RemoteProgram:
        if self._sock is None:
            self._start()
        assert self._sock is not None
        request = (str(source), hook, list(cflags), _map_names(source))
        try:
            self._sock.send(pickle.dumps(request))
            data, fds, _flags, _addr = socket.recv_fds(self._sock, _MAX_MESSAGE, _MAX_FDS)
        except OSError as e:
            data, fds = b"", []
            detail = e.strerror
        else:
            detail = "it exited"
        if not data:
            self.close()
            raise PyprobeError(f"{source.name}: the compiler process failed ({detail})")
        reply = pickle.loads(data)  # from our own child
        if isinstance(reply, str):
            raise PyprobeError(reply)
        return RemoteProgram(reply, fds)

    def _start(self) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        me = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            parent.close()
            code = 1
            try:
                _serve(child, me)
                code = 0
            except BaseException as e:
                os.write(2, f"pyprobe: compiler process: {type(e).__name__}: {e}\n".encode())
            finally:
                os._exit(code)
        child.close()
        self._sock, self._pid = parent, pid

    def close(self) -> None:
        """End the child (its memory goes with it); loaded programs stay."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()  # the child reads EOF and leaves
        if self._pid:
            pid, self._pid = self._pid, 0
            os.waitpid(pid, 0)


def _map_names(source: Path) -> list[str]:
    """The maps a program's manifest declares (paired by stem), and the
    shared map-errors counter."""
    stem = source.name.removesuffix(".bpf.c")
    path = probes_dir() / f"{stem}.toml"
    names = [m.name for m in manifest_mod.load(path, bpf_dir()).maps] if path.is_file() else []
    return [*names, "map_errors"]


def _serve(sock: socket.socket, parent: int) -> None:  # pragma: no cover - runs in the child
    """The child: load what is asked, send back descriptions and fds, until EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        return  # the parent was gone before the death signal was asked for
    kept = []  # never cleaned up: what they hold is the parent's now
    loader = BccLoader()
    while True:
        data = sock.recv(_MAX_MESSAGE)
        if not data:
            return
        source, hook, cflags, maps = pickle.loads(data)
        reply: Exported | str
        fds: Sequence[int] = []
        try:
            program = loader.load(Path(source), hook, cflags)
            kept.append(program)
            reply, fds = program.export(maps)
        except PyprobeError as e:
            reply = str(e)
        except Exception as e:
            reply = f"{Path(source).name}: {type(e).__name__}: {e}"
        socket.send_fds(sock, [pickle.dumps(reply)], list(fds))
