"""The one module that imports bcc: compile a program with clang through
bcc, load and attach it here (BccLoader, BccProgram), or only verify it;
compile a tc classifier. Everything else talks to a Program (load/program.py).

bcc is imported when first needed, never at import time: importing it maps
clang and LLVM (~100 MB), which a process that only reads maps (the
exporter, the CLI after its compiler process is gone) must never hold.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import PyprobeError
from ..kernel import programs
from ..kernel.env import KernelEnv
from ..kernel.points import Hook
from . import ringbuf
from .layouts import layout_of, members
from .maps import Key, MapLayout, MapReader
from .program import (
    Exported,
    Exports,
    LoadRequest,
    RingbufCallback,
    RingOwner,
    preflight,
    program_text,
)


def _bcc() -> ModuleType:
    try:
        import bcc
    except Exception as e:  # missing, or a broken install: its error says which
        raise PyprobeError(f"cannot import bcc ({e}): apt-get install python3-bpfcc") from None
    return bcc


def bcc_version() -> str:
    """bcc's version, or why it cannot be imported (for `pyprobe doctor`)."""
    try:
        return getattr(_bcc(), "__version__", "") or "installed"
    except PyprobeError as e:
        return f"import failed: {e}"


@contextlib.contextmanager
def _captured_stderr(capture: list[str]) -> Iterator[None]:
    """clang prints diagnostics on fd 2: keep them for the error line, off the terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            capture.append(tmp.read().decode(errors="replace"))


def release_compiler_memory() -> None:
    """Give back to the system the heap LLVM used to compile the programs.
    glibc keeps freed memory in its arenas; a daemon that compiled seven
    programs at start-up holds ~45 MB it will never use again."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class BccProgram(RingOwner):
    def __init__(self, bpf: Any, hook: Hook) -> None:
        self.bpf = bpf
        self.hook = hook
        self._closed = False
        self._raised: BaseException | None = None
        self._rings = []
        self._readers: dict[str, MapReader | None] = {}
        self._tracing: dict[str, int] = {}  # tp_btf programs we loaded: function -> fd
        self._links: list[int] = []  # and their attachments

    def read_counts(self, map_name: str, per_cpu: bool = False) -> dict[Key, int]:
        """key -> value, zero values left out.

        Per-CPU maps are summed over CPUs, or with per_cpu=True split: the CPU
        number is appended to the key. A struct value (several counters under
        one key, one map update per event) is split too: the member's index
        (see leaf_fields) is appended to the key, before the CPU."""
        table = self.bpf[map_name.encode()]
        reader = self._reader(map_name)
        if reader is not None:
            try:
                return reader.read(per_cpu)
            except OSError:
                self._readers[map_name] = None  # bcc's way from now on
        percpu = hasattr(table, "sum")
        members = list(self.leaf_fields(map_name))
        out: dict[Key, int] = {}
        try:
            items = table.items_lookup_batch()
        except Exception:
            items = table.items()  # kernels without batch ops for this map type
        for k, v in items:
            key = _key(k)
            base = key if isinstance(key, tuple) else (key,)
            per_cpu_values = list(v) if percpu else [v]
            if not per_cpu:
                per_cpu_values = [_sum_leaves(per_cpu_values, members)]
            for cpu, leaf in enumerate(per_cpu_values):
                tail = (cpu,) if per_cpu else ()
                if members:
                    # A key that exists reports every member, zeros included: a
                    # device that polled but never exhausted its budget has a
                    # budget-exhausted counter of 0, not no counter.
                    values = [int(getattr(leaf, name)) for name in members]
                    if any(values):
                        for i, value in enumerate(values):
                            out[(*base, i, *tail)] = value
                else:
                    value = int(getattr(leaf, "value", leaf))
                    if value:
                        out[(*base, *tail) if per_cpu or isinstance(key, tuple) else key] = value
        return out

    def _reader(self, map_name: str) -> MapReader | None:
        if map_name not in self._readers:
            table = self.bpf[map_name.encode()]
            layout = layout_of(map_name, table)
            self._readers[map_name] = MapReader(table.map_fd, layout) if layout else None
        return self._readers[map_name]

    def leaf_fields(self, map_name: str) -> tuple[str, ...]:
        table = self.bpf[map_name.encode()]
        leaf = getattr(table, "sLeaf", table.Leaf)  # per-CPU maps: Leaf is an array of sLeaf
        return members(leaf)

    def key_fields(self, map_name: str) -> tuple[str, ...]:
        return members(self.bpf[map_name.encode()].Key)

    def delete_keys(self, map_name: str, keys: list[Key]) -> None:
        """Delete these keys (as read_counts gives them, without the member
        index or CPU appended); an array's are zeroed."""
        table = self.bpf[map_name.encode()]
        for k in keys:
            key = table.Key(*k) if isinstance(k, tuple) else table.Key(k)
            if hasattr(table, "clearitem"):  # an array: zeroed, every CPU's value
                table.clearitem(key)
                continue
            with contextlib.suppress(KeyError):
                del table[key]

    def export(self, exports: Exports) -> tuple[Exported, list[int]]:
        """What another process needs to own this program: the layouts of
        the maps it reads (those it has; of its own state, those that are
        integers), its ring buffers, and the fds of its maps, rings,
        programs and attachments, in that order. Sent with SCM_RIGHTS, the
        fds keep it all in the kernel, attached, after this process is gone."""
        layouts: list[MapLayout] = []
        fds: list[int] = []
        for name in exports.maps:
            try:
                table = self.bpf[name.encode()]
            except Exception:  # not in this build of the program (e.g. stream-only)
                continue
            layout = layout_of(name, table)
            if layout is None:
                if name in exports.own:
                    continue  # e.g. a stream's socket -> owner map: the program's alone
                raise PyprobeError(f"map {name}: a key or value that is not integers")
            layouts.append(layout)
            fds.append(table.map_fd)
        ring_names = []
        for name in exports.rings:
            try:
                fds.append(self.bpf[name.encode()].map_fd)
            except Exception:  # built without its stream
                continue
            ring_names.append(name)
        functions = [name.decode() for name in self.bpf.funcs] + list(self._tracing)
        fds += [fn.fd for fn in self.bpf.funcs.values()] + list(self._tracing.values())
        links = [
            *self._links,
            *self.bpf.raw_tracepoint_fds.values(),
            *self.bpf.tracepoint_fds.values(),
            *(fd for per_fn in self.bpf.kprobe_fds.values() for fd in per_fn.values()),
        ]
        return Exported(self.hook, layouts, functions, len(links), ring_names), fds + links

    def map_names(self) -> dict[int, str]:
        """fd -> name of each map the compiled module holds."""
        return table_ids(self.bpf)

    def instructions(self, function: str) -> bytes:
        """A function's instructions as loaded (map fds written in)."""
        return bytes(self.bpf.dump_func(function.encode()))

    def program_fds(self) -> dict[str, int]:
        """function name -> fd of each loaded program (for run-time stats)."""
        return {name.decode(): fn.fd for name, fn in self.bpf.funcs.items()} | self._tracing

    def attach_tp_btf(self, function: str, target: str, btf_id: int) -> None:
        """Load bcc's compiled function as a tp_btf program and attach it."""
        self._links.append(programs.attach(self.load_tp_btf(function, target, btf_id)))

    def load_tp_btf(self, function: str, target: str, btf_id: int) -> int:
        """Load bcc's compiled function as a tp_btf program: its fd."""
        if not btf_id:
            raise PyprobeError(f"{target}: no btf_trace_{target} in this kernel's BTF")
        if function in self._tracing:
            # Loaded against one tracepoint's BTF id, a tp_btf program cannot
            # serve a second; a second load would orphan the first fd here.
            raise PyprobeError(f"{function}: a tp_btf function attaches to one tracepoint only")
        fd = programs.load_tp_btf(self.bpf.dump_func(function.encode()), function, btf_id)
        self._tracing[function] = fd
        return fd

    def map_usage(self, names: list[str]) -> list[tuple[str, int, int]]:
        """(map, entries in use, capacity) of these (hash) maps."""
        out = []
        for name in names:
            table = self.bpf[name.encode()]
            reader = self._reader(name)  # a batch count, as RemoteProgram does
            used = reader.count() if reader is not None else sum(1 for _ in table)
            out.append((name, used, int(table.max_entries)))
        return out

    def open_ringbuf(self, map_name: str, callback: RingbufCallback) -> None:
        if ringbuf.available():
            super().open_ringbuf(map_name, callback)
            return
        table = self.bpf[map_name.encode()]

        def on_event(_ctx: Any, data: Any, size: int) -> int:
            # An exception cannot cross the C frames of ring_buffer_poll: ctypes
            # would print and drop it (a Ctrl-C under load was lost that way).
            # Keep it, stop consuming (nonzero), and raise it in poll().
            try:
                callback(ctypes.string_at(data, size))
            except BaseException as e:
                self._raised = e
                return -1
            return 0

        table.open_ring_buffer(on_event)

    def _ring_fd(self, map_name: str) -> int:
        return int(self.bpf[map_name.encode()].map_fd)

    def poll(self, timeout_ms: int) -> None:
        if self._rings:
            self.poll_rings(timeout_ms)
            return
        self.bpf.ring_buffer_poll(timeout_ms)
        self._reraise()
        self.bpf.ring_buffer_consume()
        self._reraise()

    def _reraise(self) -> None:
        if self._raised is not None:
            raised, self._raised = self._raised, None
            raise raised

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.close_rings()
            for fd in [*self._links, *self._tracing.values()]:
                os.close(fd)  # the links first: detached, then unloaded
            self._links, self._tracing = [], {}
            self.bpf.cleanup()


class BccLoader:
    """Compiles, loads and attaches in this process (bcc's memory stays here:
    for tests, and for streams bcc must read itself, load/compilers.py)."""

    def check(self, env: KernelEnv) -> None:
        preflight(env)

    def load(self, request: LoadRequest) -> BccProgram:
        bpf = compile_program(request.source, request.hook, request.cflags)
        program = BccProgram(bpf, request.hook)
        log: list[str] = []
        try:
            with _captured_stderr(log):  # bcc prints the verifier log here on failure
                _attach(program, request.hook)
        except Exception as e:
            program.close()
            last = (
                next((ln for ln in reversed(log[0].splitlines()) if ln.strip()), "") if log else ""
            )
            raise PyprobeError(
                f"{request.source.name}: cannot attach {request.hook.label}: {e} {last}".rstrip()
            ) from None
        return program


def compile_program(source: Path, hook: Hook, cflags: tuple[str, ...] | list[str]) -> Any:
    """bcc's BPF module for a program: compiled, its maps created, nothing
    loaded or attached yet. A compile error is one line: clang's first."""
    bpf_class = _bcc().BPF
    flags = [f"-I{source.parent}", "-Wno-unused-function", *hook.cflags, *cflags]
    diagnostics: list[str] = []
    try:
        with _captured_stderr(diagnostics):
            return bpf_class(text=program_text(source).encode(), cflags=flags)
    except Exception as e:
        detail = _first_error(diagnostics[0] if diagnostics else "") or str(e)
        raise PyprobeError(f"{source.name}: compile failed: {detail}") from None


class _Sum:
    """Per-CPU leaves added up member by member."""

    def __init__(self, **values: int) -> None:
        self.__dict__.update(values)


def _sum_leaves(leaves: list[Any], members: list[str]) -> Any:
    if len(leaves) == 1:
        return leaves[0]
    if members:
        return _Sum(**{m: sum(int(getattr(x, m)) for x in leaves) for m in members})
    return sum(int(getattr(x, "value", x)) for x in leaves)


def _key(k: Any) -> Key:
    if isinstance(k, int):
        return k
    if hasattr(k, "value"):
        return int(k.value)
    return tuple(int(getattr(k, name)) for name, *_ in k._fields_)


def _first_error(text: str) -> str:
    for line in text.splitlines():
        if "error:" in line:
            return line.strip()
    return ""


def _attach(program: BccProgram, hook: Hook) -> None:
    bpf = program.bpf
    for p in hook.points:
        target, fn, kind = p.target.encode(), p.function.encode(), p.kind or hook.kind
        if p.deferred:  # loaded only: its plug-in attaches it (by fd) when it needs it
            if kind == "tp_btf":
                program.load_tp_btf(p.function, p.target, p.btf_id)
            else:
                bpf.load_func(fn, _bcc().BPF.RAW_TRACEPOINT)
        elif kind == "tp_btf":
            program.attach_tp_btf(p.function, p.target, p.btf_id)
        elif kind == "raw_tracepoint":
            bpf.attach_raw_tracepoint(tp=target, fn_name=fn)
        elif kind == "tracepoint":
            bpf.attach_tracepoint(tp=target, fn_name=fn)
        elif kind == "kprobe":
            bpf.attach_kprobe(event=target, fn_name=fn)
        else:
            raise ValueError(f"unknown hook kind {kind}")


def verify(source: Path, hook: Hook, cflags: list[str]) -> None:
    """Compile and pass the verifier without attaching (tests of fallback hooks)."""
    bpf_class = _bcc().BPF
    kinds = {
        "raw_tracepoint": bpf_class.RAW_TRACEPOINT,
        "tracepoint": bpf_class.TRACEPOINT,
        "kprobe": bpf_class.KPROBE,
    }
    bpf = compile_program(source, hook, cflags)
    try:
        for p in hook.points:
            kind = p.kind or hook.kind
            if kind == "tp_btf":
                insns = bpf.dump_func(p.function.encode())
                os.close(programs.load_tp_btf(insns, p.function, p.btf_id))
            else:
                bpf.load_func(p.function.encode(), kinds[kind])
    finally:
        bpf.cleanup()


def compile_classifier(source: Path, function: str, cflags: list[str]) -> bytes:
    """A tc classifier's instructions (bcc's dump_func), compiled and
    verified as BPF_PROG_TYPE_SCHED_CLS here; nothing stays loaded."""
    bpf_class = _bcc().BPF
    diagnostics: list[str] = []
    try:
        with _captured_stderr(diagnostics):
            bpf = bpf_class(text=program_text(source).encode(), cflags=cflags)
            bpf.load_func(function.encode(), bpf_class.SCHED_CLS)
    except Exception as e:
        detail = _first_error(diagnostics[0] if diagnostics else "") or str(e)
        raise PyprobeError(f"{source.name}: {detail}") from None
    try:
        return bytes(bpf.dump_func(function.encode()))
    finally:
        bpf.cleanup()


def table_ids(bpf: Any) -> dict[int, str]:
    """fd -> name of every map a compiled module holds (what the program
    cache names each map relocation by, load/cache.py)."""
    lib = _bcc().libbcc.lib
    lib.bpf_num_tables.restype = ctypes.c_size_t
    lib.bpf_num_tables.argtypes = [ctypes.c_void_p]
    lib.bpf_table_name.restype = ctypes.c_char_p
    lib.bpf_table_name.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.bpf_table_fd_id.restype = ctypes.c_int
    lib.bpf_table_fd_id.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    out = {}
    for i in range(lib.bpf_num_tables(bpf.module)):
        fd = lib.bpf_table_fd_id(bpf.module, i)
        if fd >= 0:
            out[fd] = lib.bpf_table_name(bpf.module, i).decode()
    return out
