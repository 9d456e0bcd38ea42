"""Compile and attach in a child process; keep only the file descriptors.

Most of the daemon's memory was bcc's: importing it maps clang and LLVM, and
compiling seven programs leaves ~90 MB of heap and touched library pages
that a long-lived process keeps (measured: 179-195 MB RSS, 29 MB without
bcc). The kernel holds a program, its maps and its attachments by file
descriptor, so a child process imports bcc, compiles, loads and attaches,
and sends the descriptors back over a Unix socket (SCM_RIGHTS); this
process reads maps with its own bpf() calls (load/maps.py) and detaches by
closing them. The child never detaches: it leaves with os._exit, skipping
bcc's atexit clean-up, whose PERF_EVENT_IOC_DISABLE would switch off this
process's tracepoint and kprobe events too.

The children are fresh interpreters (load/compiler_process.py), started
with exec, never a bare fork: the exporter starts them while its HTTP
thread serves, and a forked copy of a process with threads inherits the
locks they held (the import lock, logging's, the allocator's) held for
ever. One did hang so, holding attached programs after its parent was gone.

Streams load the same way: the ring buffer's fd comes back with the rest,
and this process reads it from its mapping (load/ringbuf.py). Where that
mapping cannot be read (ringbuf.available: not x86), a stream is compiled
here instead and bcc's callback reads it.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import selectors
import socket
import subprocess
import sys
from collections.abc import Generator, Sequence
from pathlib import Path

from ..errors import PyprobeError
from ..kernel.env import KernelEnv
from . import cache, ringbuf
from .bcc import BccLoader
from .compiler_process import MAX_FDS, MAX_MESSAGE
from .maps import Key, MapReader
from .program import Exported, LoadRequest, Program, RingOwner, preflight, program_text

CHILD = "pyprobe.load.compiler_process"  # run with python -m


class RemoteProgram(RingOwner):
    """A program another process loaded (or the program cache): its maps, ring
    buffers, functions and links, by fd."""

    def __init__(self, exported: Exported, fds: list[int]) -> None:
        self.hook = exported.hook
        self._fds = fds
        self._rings = []
        nmaps, nrings, nfuncs = len(exported.maps), len(exported.rings), len(exported.functions)
        self._readers = {
            layout.name: MapReader(fd, layout)
            for layout, fd in zip(exported.maps, fds[:nmaps], strict=True)
        }
        self._ring_fds = dict(zip(exported.rings, fds[nmaps : nmaps + nrings], strict=True))
        funcs = fds[nmaps + nrings : nmaps + nrings + nfuncs]
        self._functions = dict(zip(exported.functions, funcs, strict=True))

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
        # (a map the program keeps for itself, not integers, is not here)
        readers = [self._readers[n] for n in names if n in self._readers]
        return [(r.layout.name, r.count(), r.cap) for r in readers]

    def _ring_fd(self, map_name: str) -> int:
        try:
            return self._ring_fds[map_name]
        except KeyError:
            raise PyprobeError(f"no ring buffer {map_name} in this program") from None

    def poll(self, timeout_ms: int) -> None:
        if not self._rings:
            raise PyprobeError("no ring buffer open")
        self.poll_rings(timeout_ms)

    def close(self) -> None:
        self.close_rings()  # its mappings, before the fd goes
        fds, self._fds = self._fds, []
        for fd in fds:  # the links first would be tidier; the kernel does not mind
            os.close(fd)


class CompilerLoader:
    """Loads through child processes, started at the first load and ended by
    close() (the daemon closes them once every probe is attached). With
    several children, load_many() compiles that many programs at once: on
    two CPUs, seven probes attach in about half the time. By default one child
    per CPU, at most two; never more than there are programs to compile."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = max(1, workers or min(2, os.cpu_count() or 1))
        self._children: list[tuple[subprocess.Popen, socket.socket]] = []

    def check(self, env: KernelEnv) -> None:
        preflight(env)

    def load(self, request: LoadRequest) -> Program:
        result = self.load_many([request])[0]
        if isinstance(result, PyprobeError):
            raise result
        return result

    def load_many(self, requests: Sequence[LoadRequest]) -> list[Program | PyprobeError]:
        """Each request's program, or the error that kept it from loading, in
        the requests' order (load_each, all of it)."""
        results = dict(self.load_each(requests))
        return [results[i] for i in range(len(requests))]

    def load_each(
        self, requests: Sequence[LoadRequest]
    ) -> Generator[tuple[int, Program | PyprobeError], None, None]:
        """(index, program or error) for each request, as each is ready: what
        was compiled before for this kernel first, from the program cache
        (load/cache.py) without a child, then the rest as children finish
        compiling it. Closing the iterator early ends the children; what they
        were compiling is dropped with its descriptors."""
        keys: list[str] = [""] * len(requests)  # "": not kept (the cache is off)
        pending = []
        for i, request in enumerate(requests):
            if request.streaming and not ringbuf.available():
                try:  # a ring bcc must read: in the process that reads it
                    yield i, BccLoader().load(request)
                except PyprobeError as e:
                    yield i, e
                continue
            kept = None
            if cache.directory() is not None and cache.cacheable(request.hook):
                keys[i] = cache_key(request)
                kept = cache.load(keys[i], request.hook)
            if kept is None:
                pending.append(i)
                continue
            yield i, RemoteProgram(*kept)
        if pending and not self._children:
            self._start(min(self.workers, len(pending)))
        busy: dict[int, int] = {}  # child -> the request it is compiling

        # Each child gets the next request as soon as it has answered its last:
        # compile times differ (0.3-1 s), and a fixed round robin left one
        # child with most of the work.
        def hand_out(k: int) -> None:
            if not pending:
                return
            i = pending.pop(0)
            with contextlib.suppress(OSError):  # a child gone: its answer says so
                self._children[k][1].send(pickle.dumps((requests[i], keys[i])))
            busy[k] = i

        died = False
        try:
            with selectors.DefaultSelector() as sel:
                for k, (_proc, sock) in enumerate(self._children):
                    sel.register(sock, selectors.EVENT_READ, k)
                    hand_out(k)
                while busy:
                    for key, _events in sel.select():
                        k = key.data
                        if k not in busy:
                            continue
                        i = busy.pop(k)
                        result = _answer(self._children[k][1], requests[i].source)
                        if isinstance(result, _Died):
                            died = True
                            sel.unregister(key.fileobj)  # no more work for a dead child
                        else:
                            hand_out(k)
                        yield i, result
            for i in pending:  # every child died
                died = True
                yield i, _Died(f"{requests[i].source.name}: no compiler process left")
        finally:
            if busy:  # the caller stopped early: what is being compiled is not wanted
                self.close(kill=True)
            elif died:
                self.close()

    def _start(self, children: int) -> None:
        for _ in range(children):
            parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                # exec'd, not forked: see the module's docstring. It watches
                # its parent: this process's pid, and the socket's other end.
                proc = subprocess.Popen(
                    [sys.executable, "-m", CHILD, str(child.fileno()), str(os.getpid())],
                    pass_fds=(child.fileno(),),
                    stdin=subprocess.DEVNULL,
                    env=_child_env(),
                )
            finally:
                child.close()
            self._children.append((proc, parent))

    def close(self, kill: bool = False) -> None:
        """End the children (their memory goes with them); loaded programs stay.
        kill: at once, not after what they are compiling (its program, attached
        in the child only, goes with the child's descriptors)."""
        children, self._children = self._children, []
        for proc, sock in children:
            sock.close()  # the child reads EOF and leaves
            if kill:
                proc.kill()
        for proc, _sock in children:
            proc.wait()


class _Died(PyprobeError):
    """A compiler process that exited (or was killed) before answering."""


def _answer(sock: socket.socket, source: Path) -> RemoteProgram | PyprobeError:
    try:
        data, fds, _flags, _addr = socket.recv_fds(sock, MAX_MESSAGE, MAX_FDS)
    except OSError as e:
        data, fds, detail = b"", [], e.strerror
    else:
        detail = "it exited"
    if not data:
        return _Died(f"{source.name}: the compiler process failed ({detail})")
    reply = pickle.loads(data)  # from our own child
    if isinstance(reply, str):
        return PyprobeError(reply)
    return RemoteProgram(reply, fds)


def cache_key(request: LoadRequest) -> str:
    """The program cache's key for what a request compiles (cache.key)."""
    exports = request.exports
    return cache.key(
        program_text(request.source),
        request.hook,
        list(request.cflags),
        [*exports.maps, *exports.rings],
    )


def _child_env() -> dict[str, str]:
    """The child imports this very pyprobe, whatever put it on our path."""
    here = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (here, path)))}
