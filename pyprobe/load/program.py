"""What every loader and loaded program looks like to the rest of pyprobe:
a `Program` (read maps, poll a ring buffer, close), a `Loader` (a request
in, a Program out), and what a request carries. Implemented by load/bcc.py
(compiles in this process), load/compilers.py (in a compiler process, or from
the program cache) and the unit tests' fake.
"""

from __future__ import annotations

import dataclasses
import re
import struct
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Protocol

from ..errors import PyprobeError
from ..kernel.env import KernelEnv
from ..kernel.points import Hook
from . import ringbuf
from .maps import Key, MapLayout

RingbufCallback = Callable[[bytes], None]
RowsCallback = Callable[[list[tuple]], None]


class Program(Protocol):
    hook: Hook

    def read_counts(self, map_name: str, per_cpu: bool = False) -> dict[Key, int]: ...
    def key_fields(self, map_name: str) -> tuple[str, ...]: ...
    def leaf_fields(self, map_name: str) -> tuple[str, ...]: ...
    def delete_keys(self, map_name: str, keys: list[Key]) -> None: ...
    def open_ringbuf(self, map_name: str, callback: RingbufCallback) -> None: ...
    def poll(self, timeout_ms: int) -> None: ...
    def close(self) -> None: ...


# The flag that builds a program's stream (its ring buffer) in.
STREAM_FLAG = "-DSTREAM"


@dataclasses.dataclass(frozen=True)
class Exports:
    """What user space keeps of a loaded program besides its programs and
    links: the maps it reads (their fronts and the shared map-errors counter
    included), of those the program's own state (left out where its key or
    value is not integers: e.g. a stream's socket -> owner map), and its ring
    buffers. The probe says, from its manifest; a loader never reads one."""

    maps: tuple[str, ...] = ()
    own: tuple[str, ...] = ()
    rings: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class LoadRequest:
    """What a loader is asked: the program's source, the hook to attach (its
    points as this kernel allows them), the compile flags, what to keep."""

    source: Path
    hook: Hook
    cflags: tuple[str, ...]
    exports: Exports = Exports()

    @property
    def streaming(self) -> bool:
        return STREAM_FLAG in self.cflags


class Loader(Protocol):
    def check(self, env: KernelEnv) -> None:
        """What this loader needs of the machine, as one line each (preflight)."""

    def load(self, request: LoadRequest) -> Program: ...


class BatchLoader(Loader, Protocol):
    """A loader for several programs at once, each given back as it is ready
    (load/compilers.py); close() ends what it started."""

    def load_each(
        self, requests: Sequence[LoadRequest]
    ) -> Generator[tuple[int, Program | PyprobeError], None, None]: ...

    def close(self) -> None: ...


def preflight(env: KernelEnv) -> None:
    """Fail with one line naming the cause and the fix, before bcc is touched."""
    if not env.can_load_bpf:
        raise PyprobeError(
            "permission denied: loading eBPF needs root (or CAP_BPF+CAP_PERFMON); run with sudo"
        )
    if not env.bcc:
        raise PyprobeError(
            "bcc is not installed for this Python: apt-get install python3-bpfcc "
            "(a venv needs --system-site-packages; PyPI's 'bcc' is a different project)"
        )
    if env.headers is None:
        root = env.host.rootfs
        host = "" if root == Path("/") else f" (nor under --path.rootfs {root})"
        raise PyprobeError(
            f"no kernel headers at /lib/modules/{env.release}/build{host}: install "
            f"linux-headers-{env.release} (in a checkout, `make setup` installs those or "
            "the nearest ones and links them)"
        )


@dataclasses.dataclass
class Exported:
    """A loaded program's description, without its fds (see BccProgram.export):
    fds come in this order: the maps', the ring buffers', the functions', then
    the links."""

    hook: Hook
    maps: list[MapLayout]
    functions: list[str]
    links: int
    rings: list[str] = dataclasses.field(default_factory=list)


class RingOwner:
    """Ring buffers read from their mapping (ringbuf.py), for a program that
    holds their fds; poll_rings() is poll() once one is open."""

    _rings: list[ringbuf.RingReader]

    def _ring_fd(self, map_name: str) -> int:
        raise NotImplementedError

    def open_ringbuf(self, map_name: str, callback: RingbufCallback) -> None:
        # Read from the mapping in batches: 1.5 us/event less than bcc's
        # per-event ctypes callback (see ringbuf.py).
        self._rings.append(ringbuf.RingReader(self._ring_fd(map_name), callback))

    def open_ringbuf_rows(
        self, map_name: str, row: struct.Struct, callback: RowsCallback, fallback: RingbufCallback
    ) -> bool:
        """Records of one fixed layout, unpacked a batch at a time (the fast
        path of a busy stream); records of another size go to fallback.
        False where the mapping cannot be read (see ringbuf.available)."""
        if not ringbuf.available():
            return False
        self._rings.append(ringbuf.RingReader(self._ring_fd(map_name), fallback, row, callback))
        return True

    def ring_reader(self) -> ringbuf.RingReader | None:
        """The ring buffer read from its mapping, when there is one (and only one)."""
        return self._rings[0] if len(self._rings) == 1 else None

    def poll_rings(self, timeout_ms: int) -> None:
        # The program wakes us only when a backlog builds up (BPF_RB_NO_WAKEUP
        # otherwise), so after the wait also take whatever is there.
        self._rings[0].wait(timeout_ms)
        for ring in self._rings:
            ring.consume()

    def close_rings(self) -> None:
        rings, self._rings = self._rings, []
        for ring in rings:
            ring.close()


_LOCAL_INCLUDE = re.compile(r'^#include "([\w.]+)"\s*$', re.M)


def program_text(source: Path) -> str:
    """The program with its local headers pasted in.

    bcc rewrites map operations (events.ringbuf_reserve(), owners.update())
    only in code written in the main file; in an #included header they stay
    calls through a function pointer and the verifier rejects the program
    ("unknown opcode 8d"). Pasting our own headers in keeps the shared
    helpers shared."""
    seen: set[str] = set()

    def paste(m: re.Match[str]) -> str:
        name = m.group(1)
        path = source.parent / name
        if not path.is_file():
            return m.group(0)
        if name in seen:
            return ""
        seen.add(name)
        return _LOCAL_INCLUDE.sub(paste, path.read_text()) + f'\n#line 1 "{source.name}"\n'

    return _LOCAL_INCLUDE.sub(paste, source.read_text())
