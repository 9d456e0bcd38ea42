"""The one module that imports bcc.

Everything else talks to a `Program` (load, attach, read maps, poll a ring
buffer, close). Unit tests inject a fake with the same methods.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import re
import struct
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from . import bpfmaps, ringbuf, tpbtf
from .bpfmaps import Key, MapLayout, MapReader
from .errors import PyprobeError
from .kernel import KernelEnv
from .manifest import Hook

RingbufCallback = Callable[[bytes], None]
RowsCallback = Callable[[list[tuple]], None]


class Program(Protocol):
    hook: Hook

    def read_counts(self, map_name: str, per_cpu: bool = False) -> dict[Key, int]: ...
    def key_fields(self, map_name: str) -> tuple[str, ...]: ...
    def leaf_fields(self, map_name: str) -> tuple[str, ...]: ...
    def open_ringbuf(self, map_name: str, callback: RingbufCallback) -> None: ...
    def poll(self, timeout_ms: int) -> None: ...
    def close(self) -> None: ...


# What a loader is asked: the program's source, the hook, the compile flags.
LoadRequest = tuple[Path, Hook, list[str]]
# The flag that builds a program's stream (its ring buffer) in.
STREAM_FLAG = "-DSTREAM"


class Loader(Protocol):
    def load(self, source: Path, hook: Hook, cflags: list[str]) -> Program: ...


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
        raise PyprobeError(
            f"no kernel headers at /lib/modules/{env.release}/build: run `make setup` "
            f"(installs linux-headers-{env.release} or the nearest ones and links them)"
        )


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
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}


def _struct_format(ctype: Any) -> str | None:
    """A struct format for an integer type or a struct of integers (bcc's
    Key/Leaf types), pads included; None for anything else. An array of
    integers is its elements in order (see _members)."""
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


def _members(ctype: Any) -> tuple[str, ...]:
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
        if bpfmaps.map_sizes(table.map_fd) != sizes:
            raise PyprobeError(
                f"map {name}: bcc describes its key and value as {sizes[0]} and {sizes[1]} "
                f"bytes, the kernel holds {bpfmaps.map_sizes(table.map_fd)}: a type bcc "
                "cannot mirror (a 2-D array?)"
            )
    return MapLayout(
        name=name,
        key_fmt=key_fmt,
        leaf_fmt=leaf_fmt,
        ncpu=ncpu,
        capacity=int(table.max_entries),
        key_fields=_members(table.Key),
        leaf_fields=_members(leaf),
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
        return _members(leaf)

    def key_fields(self, map_name: str) -> tuple[str, ...]:
        return _members(self.bpf[map_name.encode()].Key)

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

    def export(
        self, maps: Sequence[str], own: Collection[str] = (), rings: Sequence[str] = ()
    ) -> tuple[Exported, list[int]]:
        """What another process needs to own this program: the layouts of
        these maps (those it has; of `own`, the program's own state, those
        that are integers), its ring buffers, and the fds of its maps, rings,
        programs and attachments, in that order. Sent with SCM_RIGHTS, the
        fds keep it all in the kernel, attached, after this process is gone."""
        layouts: list[MapLayout] = []
        fds: list[int] = []
        for name in maps:
            try:
                table = self.bpf[name.encode()]
            except Exception:  # not in this build of the program (e.g. stream-only)
                continue
            layout = layout_of(name, table)
            if layout is None:
                if name in own:
                    continue  # e.g. a stream's socket -> owner map: the program's alone
                raise PyprobeError(f"map {name}: a key or value that is not integers")
            layouts.append(layout)
            fds.append(table.map_fd)
        ring_names = []
        for name in rings:
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

    def program_fds(self) -> dict[str, int]:
        """function name -> fd of each loaded program (for run-time stats)."""
        return {name.decode(): fn.fd for name, fn in self.bpf.funcs.items()} | self._tracing

    def attach_tp_btf(self, function: str, target: str, btf_id: int) -> None:
        """Load bcc's compiled function as a tp_btf program and attach it."""
        if not btf_id:
            raise PyprobeError(f"{target}: no btf_trace_{target} in this kernel's BTF")
        if function in self._tracing:
            # Loaded against one tracepoint's BTF id, a tp_btf program cannot
            # serve a second; a second load would orphan the first fd here.
            raise PyprobeError(f"{function}: a tp_btf function attaches to one tracepoint only")
        fd = tpbtf.load(self.bpf.dump_func(function.encode()), function, btf_id)
        self._tracing[function] = fd
        self._links.append(tpbtf.attach(fd))

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
    def load(self, source: Path, hook: Hook, cflags: list[str]) -> BccProgram:
        try:
            from bcc import BPF
        except ImportError as e:
            raise PyprobeError(f"cannot import bcc ({e}): apt-get install python3-bpfcc") from None
        flags = [f"-I{source.parent}", "-Wno-unused-function", *hook.cflags, *cflags]
        diagnostics: list[str] = []
        try:
            with _captured_stderr(diagnostics):
                bpf = BPF(text=program_text(source).encode(), cflags=flags)
        except Exception as e:
            detail = _first_error(diagnostics[0] if diagnostics else "") or str(e)
            raise PyprobeError(f"{source.name}: compile failed: {detail}") from None
        program = BccProgram(bpf, hook)
        log: list[str] = []
        try:
            with _captured_stderr(log):  # bcc prints the verifier log here on failure
                _attach(program, hook)
        except Exception as e:
            program.close()
            last = (
                next((ln for ln in reversed(log[0].splitlines()) if ln.strip()), "") if log else ""
            )
            raise PyprobeError(
                f"{source.name}: cannot attach {hook.label}: {e} {last}".rstrip()
            ) from None
        return program


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
        if kind == "tp_btf":
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
    from bcc import BPF

    kinds = {
        "raw_tracepoint": BPF.RAW_TRACEPOINT,
        "tracepoint": BPF.TRACEPOINT,
        "kprobe": BPF.KPROBE,
    }
    bpf = BPF(
        text=program_text(source).encode(),
        cflags=[f"-I{source.parent}", "-Wno-unused-function", *hook.cflags, *cflags],
    )
    try:
        for p in hook.points:
            kind = p.kind or hook.kind
            if kind == "tp_btf":
                os.close(tpbtf.load(bpf.dump_func(p.function.encode()), p.function, p.btf_id))
            else:
                bpf.load_func(p.function.encode(), kinds[kind])
    finally:
        bpf.cleanup()


@contextlib.contextmanager
def tc_program(source: Path, function: str, cflags: list[str]) -> Iterator[tuple[int, str]]:
    """A compiled tc classifier: (fd, name) while the block runs. Attach it
    (e.g. a cls_bpf filter through pyroute2) inside the block; the filter then
    holds the program, which outlives this process until its device goes.

    Kept in the program cache once compiled (~1.3 s of clang here, for a
    dozen instructions): the next `lab up --loss` or firewall loads them."""
    from . import objcache

    text = program_text(source)
    entry = objcache.classifier_key(text, function, cflags)
    kept = objcache.load_classifier(entry, function)
    if kept is not None:
        try:
            yield kept, function
        finally:
            os.close(kept)
        return
    try:
        from bcc import BPF
    except ImportError as e:
        raise PyprobeError(f"cannot import bcc ({e}): apt-get install python3-bpfcc") from None
    diagnostics: list[str] = []
    try:
        with _captured_stderr(diagnostics):
            bpf = BPF(text=text.encode(), cflags=cflags)
            fn = bpf.load_func(function.encode(), BPF.SCHED_CLS)
    except Exception as e:
        detail = _first_error(diagnostics[0] if diagnostics else "") or str(e)
        raise PyprobeError(f"{source.name}: {detail}") from None
    try:
        objcache.save_classifier(entry, function, bpf.dump_func(function.encode()))
        yield fn.fd, function
    finally:
        bpf.cleanup()
