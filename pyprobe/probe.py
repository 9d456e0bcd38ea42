"""The Probe: one interface for the CLI, the exporter and the tests.

available() -> which hook this kernel allows, and why
attach()    -> load + attach (optionally with the event stream)
collect()   -> Prometheus metric families, read from the maps now
rows()      -> the same numbers as plain dicts, for tables and JSON
events()    -> decoded per-event records from the ring buffer
detach()    -> nothing left in the kernel; also on `with` exit
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import os
import re
import struct
from collections import deque
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from . import fronts, structs
from .decoders import Decoders
from .errors import PyprobeError
from .forkload import ForkLoader
from .hooks import Choice, choose, usable_points
from .kernel import KernelEnv
from .loader import STREAM_FLAG, BccLoader, Loader, LoadRequest, Program, preflight
from .manifest import CPU_FIELD, MAX_FRONT, Hook, Manifest, front_size_ok
from .manifest import Metric as MetricSpec

PREFIX = "pyprobe_"
STALE_AFTER = 3  # collections that found a namespace or device gone, before its keys go
SLOT_FIELD = "slot"  # a histogram key's bucket member
# What a Probe loads with when none is given; unit tests swap in a fake.
DEFAULT_LOADER: Callable[[], Loader] = BccLoader
# What the CLI's commands and the demo load with: compiler processes and the
# program cache, like the exporter (a stream's ring buffer comes back by fd).
COMMAND_LOADER: Callable[[], ForkLoader] = ForkLoader
# Ring buffer size for streams, in pages; like bpftrace's BPFTRACE_PERF_RB_PAGES
# the environment can change the default (a CLI's --buffer-pages wins).
RINGBUF_PAGES_ENV = "PYPROBE_RINGBUF_PAGES"
RINGBUF_PAGES_DEFAULT = 4096  # 16 MiB: ~150k events of burst (1.3 s at 115k/s) before a loss


def ringbuf_pages(value: int | str | None = None) -> int:
    """The ring buffer's size in pages: a power of two the kernel accepts."""
    source = "--buffer-pages"
    if value is None:
        source = RINGBUF_PAGES_ENV
        value = os.environ.get(RINGBUF_PAGES_ENV) or RINGBUF_PAGES_DEFAULT
    text = str(value).strip()
    n = int(text) if text.isdigit() else 0
    if not 0 < n <= 1 << 18 or n & (n - 1):
        raise PyprobeError(
            f"bad {source} {value!r}: a power of two from 1 to 262144 (pages of 4 KiB)"
        )
    return n


MAP_ENTRIES_ENV = "PYPROBE_MAP_ENTRIES"


def map_entries(manifest: Manifest, override: str | None = None) -> dict[str, int]:
    """Each map's capacity, and each front's slots (as NAME_front): the
    manifest's, or PROBE.MAP=N from $PYPROBE_MAP_ENTRIES (comma-separated)
    for hosts that need smaller maps (a front: 0 for none)."""
    sizes = {m.name: m.entries for m in manifest.maps}
    fronts = {f"{m.name}_front": m.front for m in manifest.maps if m.front}
    sizes |= fronts
    text = os.environ.get(MAP_ENTRIES_ENV, "") if override is None else override
    for item in filter(None, (part.strip() for part in text.split(","))):
        target, _, value = item.partition("=")
        probe, _, name = target.partition(".")
        if probe != manifest.name:
            continue
        n = int(value) if value.isdigit() else -1
        good = (n == 0 or front_size_ok(n)) if name in fronts else 0 < n <= 1 << 24
        if name not in sizes or not good:
            raise PyprobeError(
                f"bad {MAP_ENTRIES_ENV} entry {item!r}: expected {manifest.name}.MAP=N, "
                f"MAP one of {', '.join(sizes)}, N from 1 to {1 << 24} "
                f"(a front: 0 or a power of two up to {MAX_FRONT})"
            )
        sizes[name] = n
    return sizes


def bpf_atomics(release: str) -> bool:
    """Whether the kernel's verifier takes compare-and-swap (5.12 and later),
    which a front's slots are claimed with."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (5, 12)


@functools.cache
def netns_cookies() -> bool:
    """Whether user space can read namespace cookies (SO_NETNS_COOKIE)."""
    from .netlink import netns_cookie

    return netns_cookie() is not None


class Probe:
    # Other commands built on this probe's stream, with the flags they add
    # (for `pyprobe compile`, which keeps their programs too).
    STREAM_VARIANTS: dict[str, tuple[str, ...]] = {}

    def __init__(
        self, manifest: Manifest, env: KernelEnv | None = None, loader: Loader | None = None
    ) -> None:
        self.manifest = manifest
        self.env = env or KernelEnv.detect()
        self.loader: Loader = loader or DEFAULT_LOADER()
        self.program: Program | None = None
        self.streaming = False
        self.ring_pages: int | None = None  # None: ringbuf_pages()'s default
        self._pending: deque[dict[str, Any]] = deque()
        self._kept: deque[tuple] | None = None  # set by want_rows(): events kept undecoded
        self._reads: dict[tuple[str, bool], dict] | None = None
        self._groups: dict[tuple[str, bool], dict[int, list[tuple[tuple, int]]]] | None = None
        # label values decoded within one reading, by the key fields they come from
        self._decoded: dict[tuple, tuple[str, ...]] = {}
        self._samples: dict[str, list[tuple[tuple[str, ...], float]]] | None = None
        self._stale: dict[tuple[int, int], int] = {}  # (netns, ifindex) -> collections gone
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
        return self.hook.label if self.hook else "-"

    # -- lifecycle -------------------------------------------------------------
    def available(self) -> Choice:
        return choose(self.manifest, self.env)

    def attach(self, stream: bool = False, cflags: Sequence[str] = ()) -> None:
        if self.program is not None:
            return
        request = self.load_request(stream, cflags)
        self.adopt(self.loader.load(*request), stream)

    def load_request(self, stream: bool = False, cflags: Sequence[str] = ()) -> LoadRequest:
        """What the loader is to compile and attach: (program, hook, flags).
        attach() is load_request() + load + adopt(); the exporter loads its
        probes' requests together (ForkLoader.load_many)."""
        if isinstance(self.loader, BccLoader | ForkLoader):
            preflight(self.env)  # first: a missing privilege explains everything after it
        choice = self.available()
        if choice.hook is None:
            raise PyprobeError(
                f"{self.name}: no usable hook on this kernel (`pyprobe doctor` explains): "
                f"{choice.reason}"
            )
        if stream and self.manifest.event is None:
            raise PyprobeError(f"{self.name}: has no event stream")
        flags = [*self.cflags(choice, stream), *cflags]
        points = usable_points(choice.hook, self.env, stream)
        hook = dataclasses.replace(choice.hook, points=points)
        return self.manifest.program, hook, flags

    def adopt(self, program: Program, stream: bool = False) -> None:
        """Take a loaded program as this probe's (see load_request)."""
        self.program = program
        self.streaming = stream
        if stream and self.manifest.event:
            ring = self.manifest.event.ringbuf
            rows = getattr(program, "open_ringbuf_rows", None)
            if (
                self.EVENT_ROW is None
                or rows is None
                or not rows(ring, self.EVENT_ROW, self._on_rows, self._on_event)
            ):
                program.open_ringbuf(ring, self._on_event)

    def cflags(self, choice: Choice, stream: bool = False) -> list[str]:
        """What the program is compiled with besides the hook's own flags:
        struct offsets, map sizes and ids, namespace ids, the stream."""
        flags = list(choice.offsets.cflags)
        sizes = map_entries(self.manifest)
        self._fronts = {}
        for index, spec in enumerate(self.manifest.maps):
            flags += [f"-DMAX_{spec.name}={sizes[spec.name]}", f"-DMAP_ID_{spec.name}={index}"]
            slots = sizes.get(f"{spec.name}_front", 0)
            if slots and bpf_atomics(self.env.release):
                flags.append(f"-DFRONT_{spec.name}={slots}")
                self._fronts[spec.name] = slots
        if any(f.startswith("-DOFF_NET_COOKIE=") for f in flags) and netns_cookies():
            flags.append("-DNET_ID_COOKIE")  # keys name namespaces by cookie, see pyprobe_bpf.h
            self.decoders.cookie_ids = True
        if stream:
            flags += [STREAM_FLAG, f"-DRINGBUF_PAGES={ringbuf_pages(self.ring_pages)}"]
        return flags

    def detach(self) -> None:
        if self.program is not None:
            program, self.program = self.program, None
            program.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _attached(self) -> Program:
        if self.program is None:
            raise PyprobeError(f"{self.name}: not attached")
        return self.program

    # -- events ----------------------------------------------------------------
    # A probe whose events are one fixed struct may give its struct.Struct and
    # decode_row(): a busy stream is then unpacked in batches (ringbuf.py).
    EVENT_ROW: struct.Struct | None = None

    def _on_event(self, raw: bytes) -> None:
        if self._kept is not None and self.EVENT_ROW is not None:
            self._kept.append((len(raw), *self.EVENT_ROW.unpack_from(raw)))
        else:
            self._pending.append(self.decode(raw))

    def _on_rows(self, rows: list[tuple]) -> None:
        if self._kept is not None:
            self._kept.extend(rows)
        else:
            self._pending.extend(map(self.decode_row, rows))

    def want_rows(self) -> bool:
        """From now on keep events as EVENT_ROW tuples (event_rows()) instead
        of decoding them to dicts (events()): for a consumer that formats rows
        itself. False when this probe has no fixed event struct."""
        if self.EVENT_ROW is None:
            return False
        if self._kept is None:
            self._kept = deque()
        return True

    def event_rows(self, timeout_ms: int = 100) -> list[tuple]:
        """Wait up to timeout_ms for events; return those that arrived, as
        EVENT_ROW tuples (after want_rows())."""
        self._attached().poll(timeout_ms)
        if self._kept is None:
            return []
        out = list(self._kept)
        self._kept.clear()
        return out

    def decode_row(self, row: tuple) -> dict[str, Any]:
        """One record unpacked by EVENT_ROW, behind its ring buffer header
        (row[0], the length)."""
        assert self.EVENT_ROW is not None
        return self.decode(self.EVENT_ROW.pack(*row[1:]))

    def decode(self, raw: bytes) -> dict[str, Any]:
        """Generic decode through the ctypes mirror; probes override for names."""
        assert self.manifest.event is not None
        cls = structs.STRUCTS[self.manifest.event.struct]
        ev = cls.from_buffer_copy(raw[: ctypes.sizeof(cls)])
        return {name: getattr(ev, name) for name, *_ in ev._fields_ if not name.startswith("_")}

    def events(self, timeout_ms: int = 100) -> list[dict[str, Any]]:
        """Wait up to timeout_ms for events; return those that arrived."""
        self._attached().poll(timeout_ms)
        out = list(self._pending)
        self._pending.clear()
        return out

    def lost(self) -> int:
        event = self.manifest.event
        if not (self.streaming and event and event.lost_map):
            return 0
        return sum(self._attached().read_counts(event.lost_map).values())

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
        usage = getattr(self._attached(), "map_usage", None)
        return usage(names) if usage else []

    def map_errors(self) -> dict[str, int]:
        """Inserts that failed because a hash map was full, by map."""
        read = getattr(self._attached(), "read_counts", None)
        if read is None:
            return {}
        try:
            counts = read("map_errors")
        except KeyError:  # a program built without the shared header
            return {}
        names = [m.name for m in self.manifest.maps]
        return {names[i]: n for i, n in counts.items() if i < len(names) and n}

    def program_fds(self) -> dict[str, int]:
        fds = getattr(self._attached(), "program_fds", None)
        return fds() if fds else {}

    # -- aggregates --------------------------------------------------------------
    @functools.cached_property
    def decoders(self) -> Decoders:
        return Decoders(self.env)

    def _metric_specs(self) -> Iterator[MetricSpec]:
        stream_only = {m.name for m in self.manifest.maps if m.stream_only}
        for spec in self.manifest.metrics:
            if spec.map not in stream_only or self.streaming:
                yield spec

    def raw_series(self, spec: MetricSpec) -> Iterator[tuple[dict[str, int], int]]:
        """(key fields, value) for a manifest metric. Integer keys are split by the
        labels' slots (and a histogram's bucket slot, lowest); struct keys by member.
        An array value member (value = "NAME[]") is split the same way by its
        elements' index: a histogram's slots, then the slots labels (netdev's sizes)."""
        program = self._attached()
        per_cpu = any(lb.field == CPU_FIELD for lb in spec.labels)
        struct_key = any(lb.field not in ("", CPU_FIELD) for lb in spec.labels)
        names = program.key_fields(spec.map) if struct_key else ()
        counts = self._read(spec.map, per_cpu)
        if spec.value:
            members = self._members(spec.map, spec.value)
            by_member = self._by_member(spec.map, per_cpu, counts)
            rows: Iterable[tuple[tuple, int, int]] = (
                (parts, value, index)
                for member, index in members.items()
                for parts, value in by_member.get(member, ())
            )
        else:
            rows = (
                (key if isinstance(key, tuple) else (key,), value, -1)
                for key, value in counts.items()
            )
        for parts, value, index in rows:
            fields: dict[str, int] = {}
            if per_cpu:
                fields[CPU_FIELD] = parts[-1]
            if struct_key:
                fields.update(zip(names, parts, strict=False))
                if index < 0:
                    yield fields, value
                    continue
                number = index
            else:
                number = parts[0] if index < 0 else index
            if spec.buckets:
                number, fields[SLOT_FIELD] = divmod(number, spec.buckets)
            for label in reversed(spec.labels):
                if not label.field:
                    number, fields[label.name] = divmod(number, label.slots)
            yield fields, value

    def _read(self, map_name: str, per_cpu: bool) -> dict:
        """A map's counts, its front's added; read once per map within one_reading()."""
        reads = self._reads
        cache_key = (map_name, per_cpu)
        if reads is not None and cache_key in reads:
            return reads[cache_key]
        program = self._attached()
        counts = program.read_counts(map_name, per_cpu=per_cpu)
        slots = self._front_slots(map_name)
        if slots:
            front = program.read_counts(f"{map_name}_front", per_cpu=True)
            counts = fronts.merge(counts, slots, front, per_cpu)
        if reads is not None:
            reads[cache_key] = counts
        return counts

    def _front_slots(self, map_name: str) -> dict[int, tuple[int, ...]]:
        """slot -> key of a map's front slots in use: those taken, and key 0's
        own, one past them (pyprobe_bpf.h); {} without a front."""
        slots = self._fronts.get(map_name, 0)
        if not slots:
            return {}
        program = self._attached()
        try:
            taken = fronts.held_keys(program.read_counts(f"{map_name}_fkeys"))
        except KeyError:  # not in this program (a fake loader's)
            del self._fronts[map_name]
            return {}
        return {**taken, slots: (0,) * len(program.key_fields(map_name))}

    def _members(self, map_name: str, value: str) -> dict[int, int]:
        """Member index -> array index (-1 for a plain member) of a value
        member, or of each element of an array member NAME[i]."""
        fields = self._attached().leaf_fields(map_name)
        if not value.endswith("[]"):
            return {fields.index(value): -1}
        prefix = value[:-1]
        found = {i: int(f[len(prefix) : -1]) for i, f in enumerate(fields) if f.startswith(prefix)}
        if not found:
            raise KeyError(f"{self.name}: map {map_name} has no array member {value!r}")
        return found

    def _by_member(
        self, map_name: str, per_cpu: bool, counts: dict
    ) -> dict[int, list[tuple[tuple, int]]]:
        """A struct-valued map's counts grouped by member: (key (+ CPU), value)
        lists, so each metric looks at its own members only (netdev has 54)."""
        cache_key = (map_name, per_cpu)
        groups = self._groups.get(cache_key) if self._groups is not None else None
        if groups is None:
            groups = {}
            at = -2 if per_cpu else -1  # the member's index follows the key (and precedes the CPU)
            for key, value in counts.items():
                parts = key if isinstance(key, tuple) else (key,)
                rest = parts[:at] + (parts[-1:] if per_cpu else ())
                groups.setdefault(parts[at], []).append((rest, value))
            if self._groups is not None:
                self._groups[cache_key] = groups
        return groups

    def _labels(self, spec: MetricSpec, fields: dict[str, int]) -> tuple[str, ...]:
        # A series' rows (histogram slots, CPUs, members) share their labels:
        # decoded once a reading. Decoders see the label's own field and the
        # namespace (device names are per namespace), nothing else.
        raw = [fields.get(label.field or label.name, 0) for label in spec.labels]
        key = (spec.name, fields.get("netns", 0), *raw)
        out = self._decoded.get(key)
        if out is None:
            decode = self.decoders.get
            out = tuple(
                decode(label.decoder)(value, fields)
                for label, value in zip(spec.labels, raw, strict=True)
            )
            if self._reads is not None:
                self._decoded[key] = out
        return out

    def samples(self, spec: MetricSpec) -> list[tuple[tuple[str, ...], float]]:
        """(label values, value) for a counter or gauge, series with equal labels
        summed; built once within one_reading() (netdev's and softirqs'
        histograms take their sums from counters the scrape serves too)."""
        done = self._samples.get(spec.name) if self._samples is not None else None
        if done is not None:
            return done
        merged: dict[tuple[str, ...], float] = {}
        for fields, value in self.raw_series(spec):
            labels = self._labels(spec, fields)
            merged[labels] = merged.get(labels, 0) + (
                value * spec.scale if spec.scale != 1 else value
            )
        out = sorted(merged.items())
        if self._samples is not None:
            self._samples[spec.name] = out
        return out

    def histograms(self, spec: MetricSpec) -> list[tuple[tuple[str, ...], list[int], float]]:
        """(label values, count per exp2 bucket, sum) for a histogram metric.

        Bucket slot k counts values in (2**(k-1), 2**k] (slot 0: 0 and 1); the
        last slot holds the sum of the values, so one map serves both."""
        series: dict[tuple[str, ...], tuple[list[int], list[float]]] = {}
        top = spec.buckets - 1
        for fields, value in self.raw_series(spec):
            labels = self._labels(spec, fields)
            buckets, total = series.setdefault(labels, ([0] * top, [0.0]))
            slot = fields.get(SLOT_FIELD, 0)
            if slot >= top:
                total[0] += value * spec.scale
            else:
                buckets[slot] += value
        return sorted((labels, b, t[0]) for labels, (b, t) in series.items())

    @contextlib.contextmanager
    def one_reading(self) -> Iterator[None]:
        """Within this block each map is read once, however many metrics use it
        (netdev's six counters all come from one map)."""
        if self._reads is not None:  # nested (a subclass's collect around ours)
            yield
            return
        self._reads, self._groups, self._decoded, self._samples = {}, {}, {}, {}
        try:
            yield
            self._prune(self._reads)
        finally:
            self._reads = self._groups = self._samples = None

    def _prune(self, reads: dict[tuple[str, bool], dict]) -> None:
        """Keys of a namespace or device that no longer exists: after
        STALE_AFTER collections in a row that found it gone, deleted from the
        map, so its series leave (like node_exporter's, when a device goes)
        and its slot is free again. Keys with netns 0 (unknown) stay."""
        program = self._attached()
        key_fields = getattr(program, "key_fields", None)
        delete = getattr(program, "delete_keys", None)
        if key_fields is None or delete is None:
            return
        gone_now: set[tuple[int, int]] = set()
        verdicts: dict[tuple[int, int], bool | None] = {}  # one look per device a collection
        doomed: dict[str, set[tuple]] = {}
        for map_name, _per_cpu in {k for k in reads}:
            names = key_fields(map_name)
            if "netns" not in names:
                continue
            at_ns = names.index("netns")
            at_if = names.index("ifindex") if "ifindex" in names else None
            for key in reads[(map_name, _per_cpu)]:
                base = key[: len(names)]
                ident = (base[at_ns], base[at_if] if at_if is not None else 0)
                if ident not in verdicts:
                    verdicts[ident] = self.decoders.gone(*ident)
                if verdicts[ident]:
                    gone_now.add(ident)
                    if self._stale.get(ident, 0) + 1 >= STALE_AFTER:
                        doomed.setdefault(map_name, set()).add(base)
        self._stale = {i: self._stale.get(i, 0) + 1 for i in gone_now}
        for map_name, keys in doomed.items():
            delete(map_name, sorted(keys))
            # Its front slots too: values zeroed before the slot is let go,
            # so the next device to take it starts from 0.
            freed = [slot for slot, key in self._front_slots(map_name).items() if key in keys]
            if freed:
                delete(f"{map_name}_front", freed)
                delete(f"{map_name}_fkeys", freed)

    def collect(self) -> Iterable[Metric]:
        with self.one_reading():
            yield from self._collect()

    def _collect(self) -> Iterable[Metric]:
        for spec in self._metric_specs():
            names = [lb.name for lb in spec.labels]
            name = PREFIX + spec.name
            if spec.type == "histogram":
                hist = HistogramMetricFamily(name, spec.help, labels=names)
                for labels, buckets, total in self.histograms(spec):
                    hist.add_metric(list(labels), _cumulative(buckets, spec.scale), total)
                yield hist
                continue
            family: CounterMetricFamily | GaugeMetricFamily
            if spec.type == "counter":
                family = CounterMetricFamily(name, spec.help, labels=names)
            else:
                family = GaugeMetricFamily(name, spec.help, labels=names)
            for labels, value in self.samples(spec):
                family.add_metric(list(labels), value)
            yield family

    def rows(self) -> list[dict[str, Any]]:
        with self.one_reading():
            return self._rows()

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for spec in self._metric_specs():
            label_names = [lb.name for lb in spec.labels]
            if spec.type == "histogram":
                for labels, buckets, total in self.histograms(spec):
                    row: dict[str, Any] = {"metric": spec.name}
                    row.update(zip(label_names, labels, strict=True))
                    n = sum(buckets)
                    last = max((k for k, c in enumerate(buckets) if c), default=-1)
                    row.update(
                        count=n,
                        sum=total,
                        p50=_quantile(buckets, 0.5, spec.scale),
                        p99=_quantile(buckets, 0.99, spec.scale),
                        buckets=buckets[: last + 1],
                    )
                    rows.append(row)
                continue
            for labels, value in self.samples(spec):
                row = {"metric": spec.name}
                row.update(zip(label_names, labels, strict=True))
                row["value"] = value
                rows.append(row)
        return rows


def _cumulative(buckets: list[int], scale: float) -> list[tuple[str, float]]:
    """Prometheus buckets (le, cumulative count) from exp2 slot counts."""
    last = max((k for k, n in enumerate(buckets) if n), default=0)
    out: list[tuple[str, float]] = []
    running = 0
    for k in range(last + 1):
        running += buckets[k]
        out.append((repr(float(2**k * scale)), running))
    out.append(("+Inf", running))
    return out


def _quantile(buckets: list[int], q: float, scale: float) -> float:
    """Upper bound of the exp2 bucket holding the q-quantile (0 when empty)."""
    total = sum(buckets)
    running = 0
    for k, n in enumerate(buckets):
        running += n
        if total and running >= q * total:
            return 2**k * scale
    return 0.0


def attach_each(
    probes: Mapping[str, Probe], loader: ForkLoader, streams: Collection[str] = ()
) -> Generator[tuple[str, PyprobeError | None], None, None]:
    """Load every probe's program in one ForkLoader.load_each (kept ones from
    the program cache, the rest compiled at once) and adopt each as it is
    ready: (name, None) once a probe is attached, (name, error) for one that
    cannot be. Those named in `streams` are attached streaming. The caller
    closes the loader."""
    requests: dict[str, LoadRequest] = {}
    for name, probe in probes.items():
        try:
            requests[name] = probe.load_request(stream=name in streams)
        except PyprobeError as e:
            yield name, e
    names = list(requests)
    # closed with this generator: a caller that stops early stops the compiling
    with contextlib.closing(loader.load_each(list(requests.values()))) as results:
        for i, result in results:
            if isinstance(result, PyprobeError):
                yield names[i], result
            else:
                probes[names[i]].adopt(result, stream=names[i] in streams)
                yield names[i], None


def attach_together(
    probes: Mapping[str, Probe], loader: ForkLoader, streams: Collection[str] = ()
) -> dict[str, PyprobeError]:
    """attach_each, all of it: what kept a probe from attaching, by name."""
    return {name: e for name, e in attach_each(probes, loader, streams) if e is not None}
