"""A probe's maps turned into series: what the manifest's metrics say each
key and value mean (labels split from keys, decoded; per-CPU values summed
or split; struct values by member; exp2 histograms), read once per map per
collection, as Prometheus metric families (collect) or plain rows for the
tables and JSON (rows). Keys of a namespace or device gone for a while are
deleted from the maps here (prune), so their series leave.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from ..load.program import Program
from . import hash_fronts
from .decoders import Decoders
from .manifest import CPU_FIELD, Manifest
from .manifest import Metric as MetricSpec
from .sources import SHARED_AGE, SOURCES, Row

PREFIX = "pyprobe_"
STALE_AFTER = 3  # collections that found a namespace or device gone, before its keys go
SLOT_FIELD = "slot"  # a histogram key's bucket member


class Series:
    def __init__(
        self,
        manifest: Manifest,
        program: Program | None,
        decoders: Decoders,
        front_slots: dict[str, int],
        streaming: bool,
        features: frozenset[str] = frozenset(),
    ) -> None:
        self.manifest = manifest
        self.program = program  # None: a probe whose metrics the kernel counts alone
        self.features = features
        self.decoders = decoders
        self.streaming = streaming
        self.name = manifest.name
        # map -> slots of its front, as the program was built (cflags)
        self._fronts = dict(front_slots)
        self._reads: dict[tuple[str, bool], dict] | None = None
        self._groups: dict[tuple[str, bool], dict[int, list[tuple[tuple, int]]]] | None = None
        # label values decoded within one reading, by the key fields they come from
        self._decoded: dict[tuple, tuple[str, ...]] = {}
        self._samples: dict[str, list[tuple[tuple[str, ...], float]]] | None = None
        self._stale: dict[tuple[int, int], int] = {}  # (netns, ifindex) -> collections gone
        self._fresh = False  # within rows(): kernel sources read now

    def specs(self, exposed: bool = True) -> Iterator[MetricSpec]:
        """The manifest's metrics this probe keeps as it was attached: those
        of its features that are on (a stream-only map's only with the
        stream); exposed, only those it shows (not another's sum)."""
        stream_only = {m.name for m in self.manifest.maps if m.stream_only}
        for spec in self.manifest.metrics:
            if (
                (spec.map not in stream_only or self.streaming)
                and (not spec.feature or spec.feature in self.features)
                and spec.unless not in self.features
                and (spec.expose or not exposed)
            ):
                yield self._labelled(spec)

    def _labelled(self, spec: MetricSpec) -> MetricSpec:
        """The spec with the labels of its features that are on (--label
        cgroup's cgroup, container, pod)."""
        if all(not lb.feature or lb.feature in self.features for lb in spec.labels):
            return spec
        labels = tuple(lb for lb in spec.labels if not lb.feature or lb.feature in self.features)
        return dataclasses.replace(spec, labels=labels)

    def raw_series(self, spec: MetricSpec) -> Iterator[tuple[dict[str, int], int]]:
        """(key fields, value) for a manifest metric. Integer keys are split by the
        labels' slots (and a histogram's bucket slot, lowest); struct keys by member.
        An array value member (value = "NAME[]") is split the same way by its
        elements' index: a histogram's slots, then the slots labels (netdev's sizes)."""
        program = self._maps()
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
        program = self._maps()
        counts = program.read_counts(map_name, per_cpu=per_cpu)
        slots = self._front_slots(map_name)
        if slots:
            front = program.read_counts(f"{map_name}_front", per_cpu=True)
            counts = hash_fronts.merge(counts, slots, front, per_cpu)
        if reads is not None:
            reads[cache_key] = counts
        return counts

    def _front_slots(self, map_name: str) -> dict[int, tuple[int, ...]]:
        """slot -> key of a map's front slots in use: those taken, and key 0's
        own, one past them (pyprobe_bpf.h); {} without a front."""
        slots = self._fronts.get(map_name, 0)
        if not slots:
            return {}
        program = self._maps()
        try:
            taken = hash_fronts.held_keys(program.read_counts(f"{map_name}_fkeys"))
        except KeyError:  # not in this program (a fake loader's)
            del self._fronts[map_name]
            return {}
        return {**taken, slots: (0,) * len(program.key_fields(map_name))}

    def _members(self, map_name: str, value: str) -> dict[int, int]:
        """Member index -> array index (-1 for a plain member) of a value
        member, or of each element of an array member NAME[i]."""
        fields = self._maps().leaf_fields(map_name)
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
        if spec.source:
            field = spec.value or "value"
            for row in self._source(spec.source):
                labels = tuple(str(row[label.field]) for label in spec.labels)
                value = row[field]
                assert isinstance(value, int | float)
                merged[labels] = merged.get(labels, 0) + value * spec.scale
        for fields, value in () if spec.source else self.raw_series(spec):
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
        out = sorted((labels, b, t[0]) for labels, (b, t) in series.items())
        return self._sums_from(spec, out) if spec.sum_from else out

    def _sums_from(
        self, spec: MetricSpec, out: list[tuple[tuple[str, ...], list[int], float]]
    ) -> list[tuple[tuple[str, ...], list[int], float]]:
        """A histogram whose program keeps no sum takes it from the counter of
        the same events (softirqs' run time, netdev's bytes), summed over the
        labels the histogram lacks, per `label` value where each has its own."""
        assert spec.sum_from is not None
        names = [lb.name for lb in spec.labels]
        sums: dict[tuple[str, tuple[str, ...]], float] = {}
        shared: list[str] = []
        for value, metric in spec.sum_from.metrics:
            other = self.manifest.metric(metric)
            theirs = [lb.name for lb in other.labels]
            shared = [n for n in theirs if n in names]
            at = [theirs.index(n) for n in shared]
            for labels, total in self.samples(other):
                key = (value, tuple(labels[i] for i in at))
                sums[key] = sums.get(key, 0.0) + total
        pick = names.index(spec.sum_from.label) if spec.sum_from.label else None
        mine = [names.index(n) for n in shared]
        return [
            (
                labels,
                buckets,
                float(
                    sums.get(
                        ("" if pick is None else labels[pick], tuple(labels[i] for i in mine)), 0
                    )
                ),
            )
            for labels, buckets, _ in out
        ]

    def _maps(self) -> Program:
        if self.program is None:
            raise KeyError(f"{self.name}: no program: its metrics are the kernel's own")
        return self.program

    def _source(self, name: str) -> list[Row]:
        """A kernel source's rows, read once within one_reading()."""
        reads = self._reads
        key = ("source:" + name, False)
        if reads is not None and key in reads:
            return reads[key]  # type: ignore[return-value]
        # rows() is a report asked for now (a command, top): the kernel's
        # counters as they are now; collect() shares one pass through the
        # namespaces among a scrape's collectors.
        rows = SOURCES[name](0.0 if self._fresh else SHARED_AGE)
        if reads is not None:
            reads[key] = rows  # type: ignore[assignment]
        return rows

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
        program = self.program
        key_fields = getattr(program, "key_fields", None)
        delete = getattr(program, "delete_keys", None)
        if key_fields is None or delete is None:
            return
        reads = {k: v for k, v in reads.items() if not k[0].startswith("source:")}
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
        """The manifest's metric families, read from the maps now."""
        with self.one_reading():
            yield from self._collect()

    def _collect(self) -> Iterable[Metric]:
        for spec in self.specs():
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
        self._fresh = True
        try:
            with self.one_reading():
                return self._rows()
        finally:
            self._fresh = False

    def _rows(self) -> list[dict[str, Any]]:
        rows = []
        for spec in self.specs():
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
