"""The Probe: one interface for the CLI, the exporter and the tests.

available() -> which hook this kernel allows, and why
attach()    -> load + attach (optionally with the event stream), through
               the loader it was given
collect()   -> Prometheus metric families, read from the maps now
rows()      -> the same numbers as plain dicts, for tables and JSON
events()    -> decoded per-event records from the ring buffer
detach()    -> nothing left in the kernel; also on `with` exit

Turning maps into series is core/series.py's; reading an event record is
core/eventcode.py's, from bpf/pyprobe.h and the manifest. A plug-in
(pyprobe/probes/NAME.py) subclasses Probe only for what a manifest cannot
say: custom decoding, a custom stream line, series from elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import struct
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

from prometheus_client.core import Metric

from ..errors import PyprobeError
from ..kernel.env import KernelEnv
from ..kernel.points import Hook
from ..load.program import STREAM_FLAG, Exports, Loader, LoadRequest, Program
from ..logs import kv
from ..netns.links import netns_name
from . import eventcode, native
from .decoders import Decoders
from .events import Layout, header
from .hooks import Choice, choose, usable_points
from .manifest import Manifest
from .series import Series
from .sizes import bpf_atomics, map_entries, netns_cookies, ringbuf_pages

log = logging.getLogger("pyprobe")


@dataclasses.dataclass(frozen=True)
class Option:
    """A command-line option a plug-in adds to its probe's command (the CLI
    makes it a click option; the probe gets its value in configure())."""

    name: str  # e.g. "--all"
    dest: str  # configure()'s keyword
    help: str
    flag: bool = False  # a flag, else a value


@dataclasses.dataclass(frozen=True)
class Table:
    """A table a plug-in adds to `top` beside its rates (queues: the deepest
    socket queues now), as text; views/top.py draws it."""

    title: str
    columns: tuple[str, ...]
    rows: Sequence[Sequence[str]]
    right: tuple[str, ...] = ()  # columns aligned right


KERNEL_COUNTERS = "kernel counters"  # what a probe that needs no program reads


class Probe:
    # Other commands built on this probe's stream, with the flags they add
    # (for `pyprobe compile`, which keeps their programs too).
    STREAM_VARIANTS: ClassVar[dict[str, tuple[str, ...]]] = {}
    # Options the probe's command takes besides the common ones.
    OPTIONS: ClassVar[tuple[Option, ...]] = ()

    def __init__(
        self,
        manifest: Manifest,
        env: KernelEnv | None = None,
        loader: Loader | None = None,
        features: Iterable[str] | None = None,
    ) -> None:
        self.manifest = manifest
        self.features = self._features(features)
        self.env = env or KernelEnv.detect()
        self.loader = loader
        self.program: Program | None = None
        self.series: Series | None = None
        self.streaming = False
        self.ring_pages: int | None = None  # None: ringbuf_pages()'s default
        # --cgroup/--container: the cgroup's id, filtered in the program
        self.cgroup_filter: int | None = None
        # the namespace names the stream shows (a command may look harder)
        self.netns_name: Callable[[int], str | None] = lambda inode: netns_name(inode) or None
        self._pending: deque[dict[str, Any]] = deque()
        self._kept: deque[tuple] | None = None  # set by want_rows(): events kept undecoded
        # map -> slots of its front, as the program was built (cflags)
        self._fronts: dict[str, int] = {}

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def hook(self) -> Hook | None:
        return self.program.hook if self.program else None

    @property
    def hook_label(self) -> str:
        if self.hook is not None:
            return self.hook.label
        return KERNEL_COUNTERS if self.series is not None else "-"

    @property
    def attached(self) -> bool:
        """Attached: its program loaded, or none needed (the kernel counts
        everything its features on show)."""
        return self.series is not None

    def _features(self, names: Iterable[str] | None) -> frozenset[str]:
        known = {f.name for f in self.manifest.features}
        if names is None:
            return self.manifest.default_features
        # all: every signal, not the label features (-F cgroup says it)
        signals = {f.name for f in self.manifest.features if not f.label}
        chosen = frozenset(signals | (set(names) - {"all"}) if "all" in names else names)
        unknown = sorted(chosen - known)
        if unknown:
            raise PyprobeError(
                f"{self.name}: no feature {unknown[0]!r}; its features: "
                f"{', '.join(sorted(known)) or 'none'}"
            )
        return chosen

    def needs_program(self, stream: bool = False) -> bool:
        """Whether anything its features on show needs a hook: a point of
        its hooks that is always attached or belongs to a feature on (else
        the kernel's own counters are all it reads)."""
        return (stream and self.manifest.event is not None) or any(
            (stream or not p.stream_only) and (not p.feature or p.feature in self.features)
            for hook in self.manifest.hooks
            for p in hook.points
        )

    def configure(self, **options: Any) -> None:
        """The values of OPTIONS, before attach()."""

    def tables(self, n: int) -> list[Table]:
        """Tables for `top` besides the manifest's rates (at most n rows each)."""
        return []

    def hides(self, row: Mapping[str, Any]) -> bool:
        """Whether a row is hidden from tables and `top` by default (drops:
        the benign ones); every series still counts it."""
        return False

    def note(self, rows: Iterable[Mapping[str, Any]]) -> str:
        """A line under the tables: what hides() left out of these rows."""
        return ""

    def stream_keep(self) -> Callable[[Mapping[str, Any]], bool] | None:
        """Which events the stream shows, where the program could not filter
        them itself; None: every one it sends."""
        return None

    # -- lifecycle -------------------------------------------------------------
    def available(self) -> Choice:
        env = self.env
        if self.refused_kinds:  # what this kernel's verifier refused: the next variant
            env = dataclasses.replace(env, disabled_hooks=env.disabled_hooks | self.refused_kinds)
        return choose(self.manifest, env, self.features)

    refused_kinds: frozenset[str] = frozenset()

    def refused_by_verifier(self, error: Exception) -> bool:
        """Whether error is this kernel's verifier refusing the tp_btf variant
        (an older verifier, a bound it cannot see: napi's on 6.1): if so, that
        kind is left out from now on and the next variant is the choice —
        the caller loads again."""
        hook = self.available().hook
        if hook is None or hook.kind != "tp_btf" or "cannot load as tp_btf" not in str(error):
            return False
        log.warning(
            "verifier refused a variant: the next one instead",
            extra=kv(probe=self.name, hook=hook.label, error=str(error)[-200:]),
        )
        self.refused_kinds = self.refused_kinds | {"tp_btf"}
        return True

    def runs_here(self, stream: bool = False) -> tuple[str | None, str]:
        """(what it would read with here: a hook's label, or the kernel's
        counters where its features on need no hook; None when it cannot
        run) and why."""
        if not self.needs_program(stream):
            return KERNEL_COUNTERS, "the kernel counts what its features on show"
        choice = self.available()
        return (choice.hook.label if choice.hook else None), choice.reason

    def attach(self, stream: bool = False, cflags: Sequence[str] = ()) -> None:
        if self.attached:
            return
        map_entries(self.manifest)  # a malformed $PYPROBE_MAP_ENTRIES is an error, program or not
        if not self.needs_program(stream):
            self.adopt(None, stream)
            return
        if self.loader is None:
            raise PyprobeError(f"{self.name}: no loader to attach with")
        try:
            program = self.loader.load(self.load_request(stream, cflags))
        except PyprobeError as e:
            if not self.refused_by_verifier(e):
                raise
            program = self.loader.load(self.load_request(stream, cflags))
        self.adopt(program, stream)

    def load_request(self, stream: bool = False, cflags: Sequence[str] = ()) -> LoadRequest:
        """What the loader is to compile and attach: program, hook, flags, and
        what to keep of it. attach() is load_request() + load + adopt(); the
        exporter loads its probes' requests together (CompilerLoader.load_each)."""
        if self.loader is not None:
            self.loader.check(self.env)  # first: a missing privilege explains what follows
        choice = self.available()
        if choice.hook is None:
            raise PyprobeError(
                f"{self.name}: no usable hook on this kernel (`pyprobe doctor` explains): "
                f"{choice.reason}"
            )
        if stream and self.manifest.event is None:
            raise PyprobeError(f"{self.name}: has no event stream")
        wants_cgroup = self.cgroup_filter is not None or "cgroup" in self.features
        if wants_cgroup and choice.offsets.source != "headers":
            absent = {"OFF_SK_CGROUP", "OFF_CGROUP_KN", "OFF_KN_ID"} - {
                flag[2:].partition("=")[0] for flag in choice.offsets.cflags
            }
            if absent:
                raise PyprobeError(
                    f"{self.name}: --cgroup/--container/--label cgroup need the socket's "
                    f"cgroup, and this kernel's BTF lacks {', '.join(sorted(absent))}"
                )
        flags = (*self.cflags(choice, stream), *cflags)
        points = tuple(
            p
            for p in usable_points(choice.hook, self.env, stream)
            if not p.feature or p.feature in self.features
        )
        hook = dataclasses.replace(choice.hook, points=points)
        return LoadRequest(self.manifest.program, hook, flags, self.exports())

    def exports(self) -> Exports:
        """What user space reads of the program: its maps (with their fronts
        and the shared map-errors counter), the stream's own, its ring."""
        maps = self.manifest.maps
        event = self.manifest.event
        return Exports(
            maps=(*(n for m in maps for n in (m.name, *m.front_maps)), "map_errors"),
            own=tuple(m.name for m in maps if m.stream_only),
            rings=(event.ringbuf,) if event else (),
        )

    def adopt(self, program: Program | None, stream: bool = False) -> None:
        """Take a loaded program as this probe's (see load_request); None
        where it needs none (needs_program)."""
        self.program = program
        self.streaming = stream
        self.series = Series(
            self.manifest, program, self.decoders, self._fronts, stream, self.features
        )
        if stream and self.manifest.event and program is not None:
            ring = self.manifest.event.ringbuf
            rows = getattr(program, "open_ringbuf_rows", None)
            if rows is None or not rows(ring, self.event_row, self._on_rows, self._on_event):
                program.open_ringbuf(ring, self._on_event)

    def cflags(self, choice: Choice, stream: bool = False) -> list[str]:
        """What the program is compiled with besides the hook's own flags:
        struct offsets, map sizes and ids, namespace ids, the stream."""
        flags = list(choice.offsets.cflags)
        sizes = map_entries(self.manifest)
        self._fronts = {}
        wide_keys = any(f.label and f.name in self.features for f in self.manifest.features)
        for index, spec in enumerate(self.manifest.maps):
            flags += [f"-DMAX_{spec.name}={sizes[spec.name]}", f"-DMAP_ID_{spec.name}={index}"]
            slots = sizes.get(f"{spec.name}_front", 0)
            if slots and bpf_atomics(self.env.release) and not wide_keys:
                flags.append(f"-DFRONT_{spec.name}={slots}")
                self._fronts[spec.name] = slots
        if any(f.startswith("-DOFF_NET_COOKIE=") for f in flags) and netns_cookies():
            flags.append("-DNET_ID_COOKIE")  # keys name namespaces by cookie, see pyprobe_bpf.h
            self.decoders.cookie_ids = True
        if stream:
            flags += [STREAM_FLAG, f"-DRINGBUF_PAGES={ringbuf_pages(self.ring_pages)}"]
        flags += [f"-DFEATURE_{name.upper()}" for name in sorted(self.features)]
        if self.cgroup_filter is not None:
            flags.append(f"-DFILTER_CGROUP={self.cgroup_filter}ull")
        return flags

    def detach(self) -> None:
        if self._native is not None:  # its view of the ring, before the ring goes
            self._native.close()
            self._native = None
        program, self.program, self.series = self.program, None, None
        if program is not None:
            program.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _attached(self) -> Program:
        if self.program is None:
            raise PyprobeError(f"{self.name}: not attached")
        return self.program

    def _series(self) -> Series:
        if self.series is None:
            raise PyprobeError(f"{self.name}: not attached")
        return self.series

    # -- events ----------------------------------------------------------------
    @functools.cached_property
    def _event(self) -> tuple[Layout, list[eventcode.Output]]:
        event = self.manifest.event
        if event is None:
            raise PyprobeError(f"{self.name}: has no event stream")
        found = header(self.manifest.program.parent)
        layout = found.layout(event.struct)
        where = f"{self.manifest.path.name}: event.fields"
        return layout, eventcode.outputs(event.fields, layout, found, where)

    @property
    def event_row(self) -> struct.Struct:
        """What a record unpacks with (a busy stream is unpacked in batches,
        load/ringbuf.py): the fields behind the ring buffer's length."""
        return self._event[0].record

    @functools.cached_property
    def _context(self) -> eventcode.Context:
        found = header(self.manifest.program.parent)
        return eventcode.Context(self.decoders, found, lambda inode: self.netns_name(inode))

    @functools.cached_property
    def decode_row(self) -> Callable[[tuple], dict[str, Any]]:
        """One record as unpacked by event_row, behind its length: a dict."""
        layout, outs = self._event
        return eventcode.decoder(outs, layout, self._context)

    @functools.cached_property
    def json_lines(self) -> Callable[[Iterable[tuple], Callable[[int], str]], str]:
        """Rows -> NDJSON, the values decode_row gives (core/eventcode.py)."""
        layout, outs = self._event
        return eventcode.json_lines(outs, layout, self._context)

    def decode(self, raw: bytes) -> dict[str, Any]:
        return self.decode_row((len(raw), *self.event_row.unpack_from(raw)))

    def _on_event(self, raw: bytes) -> None:
        if self._kept is not None and len(raw) >= self.event_row.size:
            self._kept.append((len(raw), *self.event_row.unpack_from(raw)))
        else:
            self._pending.append(self.decode(raw))

    def _on_rows(self, rows: list[tuple]) -> None:
        if self._kept is not None:
            self._kept.extend(rows)
        else:
            self._pending.extend(map(self.decode_row, rows))

    def want_rows(self) -> None:
        """From now on keep events as rows (event_rows()) instead of decoding
        them to dicts (events()): for a consumer that formats rows itself."""
        if self._kept is None:
            self._kept = deque()

    def event_rows(self, timeout_ms: int = 100) -> list[tuple]:
        """Wait up to timeout_ms for events; return those that arrived, as
        rows (after want_rows())."""
        self._attached().poll(timeout_ms)
        if self._kept is None:
            return []
        out = list(self._kept)
        self._kept.clear()
        return out

    def events(self, timeout_ms: int = 100) -> list[dict[str, Any]]:
        """Wait up to timeout_ms for events; return those that arrived."""
        self._attached().poll(timeout_ms)
        out = list(self._pending)
        self._pending.clear()
        return out

    _native: native.NativeJson | None = None

    def native_json(self, netns_json: Callable[[int], str]) -> Callable[[int], bytes] | None:
        """The stream's NDJSON made in C (core/native.py): a function that
        waits up to timeout_ms and returns the lines of what arrived, the
        bytes json_lines would give. None where it cannot be had (no
        compiler, not x86, a decoder C lacks, the ring read by bcc)."""
        reader = getattr(self._attached(), "ring_reader", lambda: None)()
        if reader is None:
            return None
        layout, outs = self._event
        lib = native.library(outs, layout, self._context.header)
        if lib is None:
            return None
        row = self.event_row

        def slow(raw: bytes) -> str:  # what C handed back
            rows = [(len(raw), *row.unpack_from(raw))] if len(raw) >= row.size else []
            return self.json_lines(rows, netns_json)

        def cgroup_json(cgroup_id: int) -> tuple[str, bool]:  # one C has not named yet
            texts = [self.decoders.cgroup_text(cgroup_id, k) for k in native.CGROUP_KEYS]
            known = not cgroup_id or self.decoders.cgroups.get(cgroup_id) is not None
            return native.cgroup_fragment(texts), known

        formatter = self._native = native.NativeJson(lib, reader, netns_json, slow, cgroup_json)

        def read(timeout_ms: int) -> bytes:
            self._attached().poll(timeout_ms)
            return formatter.take()

        return read

    HEADER = "EVENT"

    def header(self) -> str:
        """The stream's text header (plug-ins give theirs, as HEADER)."""
        return self.HEADER

    def line(self, ev: Mapping[str, Any]) -> str:
        """An event's line in the stream's text output (plug-ins give theirs)."""
        return " ".join(f"{k}={v}" for k, v in ev.items() if k != "time" and v not in ("", None))

    def lost(self) -> int:
        event = self.manifest.event
        if not (self.streaming and event and event.lost_map and self.program):
            return 0
        return sum(self._attached().read_counts(event.lost_map).values())

    # -- series ------------------------------------------------------------------
    @functools.cached_property
    def decoders(self) -> Decoders:
        return Decoders(self.env)

    def collect(self) -> Iterable[Metric]:
        """Metric families, read from the maps now; a plug-in adds its own."""
        return self._series().collect()

    def rows(self) -> list[dict[str, Any]]:
        """The same numbers as collect(), as plain dicts (tables, JSON)."""
        return self._series().rows()

    # -- health, for the exporter's self-metrics --------------------------------------
    def map_usage(self) -> list[tuple[str, int, int]]:
        """(map, entries, capacity) of the hash maps this program has loaded.
        (Not their fronts: a full front is normal, its overflow goes to the hash.)"""
        names = [
            m.name
            for m in self.manifest.maps
            if m.type in ("hash", "percpu_hash", "lru_hash")
            and (self.streaming or not m.stream_only)
        ]
        usage = getattr(self.program, "map_usage", None)
        return usage(names) if usage else []

    def map_errors(self) -> dict[str, int]:
        """Inserts that failed because a hash map was full, by map."""
        if self.program is None:
            return {}
        try:
            counts = self.program.read_counts("map_errors")
        except KeyError:  # a program built without the shared header
            return {}
        names = [m.name for m in self.manifest.maps]
        return {
            names[i]: n for i, n in counts.items() if isinstance(i, int) and i < len(names) and n
        }

    def program_fds(self) -> dict[str, int]:
        fds = getattr(self.program, "program_fds", None)
        return fds() if fds else {}


# What a plug-in module registers (node_exporter's collectors register
# themselves the same way): probe name -> its Probe subclass.
PLUGINS: dict[str, type[Probe]] = {}


def plugin(name: str) -> Callable[[type[Probe]], type[Probe]]:
    def register(cls: type[Probe]) -> type[Probe]:
        PLUGINS[name] = cls
        return cls

    return register
