"""Probe manifests (probes/<name>.toml): hooks, offsets, maps, event, metrics.

Parsed into frozen dataclasses and validated up front, so a malformed
manifest is one clear error naming the file and the key, never a KeyError
deep inside a probe.
"""

from __future__ import annotations

import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10 (Ubuntu 22.04): the same parser, as a package
    import tomli as tomllib
from dataclasses import dataclass
from pathlib import Path

from ..kernel.points import HOOK_KINDS, Hook, Point
from .sources import SOURCES
from .tomlreader import ManifestError
from .tomlreader import Reader as _Reader

NEEDS = ("offsets", "btf")
MAP_TYPES = ("array", "percpu_array", "hash", "percpu_hash", "lru_hash", "ringbuf")
METRIC_TYPES = ("counter", "gauge", "histogram")
# A histogram's last bucket slot holds the sum of the observed values.
CPU_FIELD = "cpu"  # a label on this field splits a per-CPU map by CPU instead of summing


@dataclass(frozen=True)
class Offset:
    macro: str
    path: str
    size: int
    optional: bool


MAX_FRONT = 4096  # front slots of a map, at most


def front_size_ok(slots: int) -> bool:
    """A front's size: a power of two up to MAX_FRONT (0, none, is the caller's to allow)."""
    return 0 < slots <= MAX_FRONT and slots & (slots - 1) == 0


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: str
    entries: int
    stream_only: bool
    # Slots of a direct-mapped array in front of a per-CPU hash with 8-byte
    # keys (NAME_fkeys, NAME_front; see pyprobe_bpf.h); 0: none.
    front: int = 0

    @property
    def front_maps(self) -> tuple[str, ...]:
        """The two maps of its front: the keys holding the slots, the values."""
        return (f"{self.name}_fkeys", f"{self.name}_front") if self.front else ()


@dataclass(frozen=True)
class Label:
    name: str
    slots: int  # integer keys: this label's share of the key (key = a*slots_b + b)
    decoder: str
    field: str = ""  # struct keys: the key member it comes from
    feature: str = ""  # kept only with this feature on ("": always)


@dataclass(frozen=True)
class TopPanel:
    """A metric's panel in `pyprobe top`: its rate per second, grouped by."""

    title: str
    by: tuple[str, ...]
    unit: str = "/s"
    scale: float = 1.0  # e.g. 100: seconds per second -> percent


@dataclass(frozen=True)
class SumFrom:
    """Where a histogram takes its sum: a counter kept for the same events
    (the program keeps no second copy of it), summed over the labels the
    histogram lacks; by `label`'s value when each value has its own counter."""

    metrics: tuple[tuple[str, str], ...]  # (label value, metric); ("", metric) for one
    label: str = ""


@dataclass(frozen=True)
class Feature:
    """Part of a probe that is off unless asked for (`--probe netdev.sizes`):
    hooks on a hot path, for detail the kernel's own counters do not give."""

    name: str
    help: str
    default: bool = False
    # A label feature (--label cgroup): it adds a member to the maps' keys
    # and labels to their series. Keys no longer 8 bytes: the maps' fronts
    # are off with it. Not in NAME.all: that is every signal, not every label.
    label: bool = False


@dataclass(frozen=True)
class Metric:
    name: str
    type: str
    map: str  # "" for a metric the kernel counts (source)
    help: str
    labels: tuple[Label, ...]
    scale: float = 1.0  # e.g. 1e-9: the map counts nanoseconds, the metric says seconds
    buckets: int = 0  # histograms: exp2 bucket slots per series (the last one is the sum)
    # maps with struct values: the member this metric reads; "NAME[]" an array
    # member, whose index splits into the histogram slot and the slots labels
    value: str = ""
    top: TopPanel | None = None
    sum_from: SumFrom | None = None
    # What the kernel already counts, read at scrape time instead of a map
    # (core/sources.py): no hook, no cost between scrapes.
    source: str = ""
    feature: str = ""  # kept only with this feature on ("": always)
    expose: bool = True  # false: read only for another metric (a histogram's sum)
    # Left out with this feature on: the same family from another map then
    # (tcpstates' transitions, by cgroup), so one name, two specs.
    unless: str = ""


@dataclass(frozen=True)
class EventSpec:
    struct: str
    ringbuf: str
    lost_map: str
    fields: tuple[str, ...] = ()  # how each reads (core/eventcode.py); () every one a number


@dataclass(frozen=True)
class Target:
    legend: str
    expr: str  # PromQL; $SEL, $NS, $DEV and $RATE stand for the dashboard's selectors


@dataclass(frozen=True)
class Panel:
    title: str
    unit: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class Dashboard:
    """The probe's row on the Grafana dashboard (views/dashboard.py)."""

    title: str
    panels: tuple[Panel, ...]  # () : one generated from each metric


@dataclass(frozen=True)
class Manifest:
    name: str
    summary: str
    path: Path
    program: Path
    hooks: tuple[Hook, ...]
    offsets: tuple[Offset, ...]
    maps: tuple[MapSpec, ...]
    event: EventSpec | None
    metrics: tuple[Metric, ...]
    features: tuple[Feature, ...] = ()
    description: str = ""  # the command's help; the summary when empty
    rank: int = 100  # where its panels go in `top` and its row on the dashboard: lower first
    dashboard: Dashboard | None = None
    # Loaded only by its own commands, with what they compile in (trace: a
    # filter): not one of the probes the exporter, `top`, `list` and the
    # dashboard are made of (Registry.names()).
    on_demand: bool = False

    def metric(self, name: str) -> Metric:
        return next(m for m in self.metrics if m.name == name)

    @property
    def default_features(self) -> frozenset[str]:
        return frozenset(f.name for f in self.features if f.default)


def parse(text: str, path: Path, bpf_dir: Path) -> Manifest:
    source = path.name
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ManifestError(f"{source}: not valid TOML: {e}") from None
    top = _Reader(source, doc, "")
    probe = _Reader(source, top.get("probe", dict), "probe")
    name = probe.get("name", str)
    if name != path.stem:
        raise ManifestError(f"{source}: probe.name {name!r} must match the file stem {path.stem!r}")
    program = bpf_dir / f"{path.stem}.bpf.c"

    hooks = tuple(
        Hook(
            kind=h.choice("kind", HOOK_KINDS),
            points=_points(h),
            cflags=h.strings("cflags"),
            needs=tuple(_check_needs(h)),
            why=h.get("why", str, ""),
        )
        for h in top.tables("hooks")
    )
    # A probe whose every metric the kernel counts (`source = ...`) needs no
    # hook and no program (node_exporter's way); anything read from a map or
    # streamed needs both.
    metric_tables = top.tables("metrics")
    if not hooks and (
        "event" in doc or not metric_tables or any("map" in m.table for m in metric_tables)
    ):
        raise ManifestError(
            f"{source}: hooks: at least one hook is required (metrics from maps, an event)"
        )

    offsets = []
    for macro, spec in top.get("offsets", dict, {}).items():
        if not isinstance(spec, dict):
            raise ManifestError(f"{source}: offsets.{macro}: expected a table")
        o = _Reader(source, spec, f"offsets.{macro}")
        offsets.append(
            # size 0: a flexible array member (cgroup.ancestors[])
            Offset(macro, o.get("path", str), o.get("size", int), o.get("optional", bool, False))
        )
        if offsets[-1].size < 0:
            raise o._fail("size", "a size in bytes, 0 for a flexible array member")

    maps = tuple(
        MapSpec(
            m.get("name", str),
            m.choice("type", MAP_TYPES),
            m.positive("entries"),
            m.get("stream_only", bool, False),
            m.get("front", int, 0),
        )
        for m in top.tables("maps")
    )
    for spec in maps:
        if spec.front and (spec.type != "percpu_hash" or not front_size_ok(spec.front)):
            raise ManifestError(
                f"{source}: maps {spec.name}: front is a power of two up to {MAX_FRONT} (slots) "
                "and goes with type percpu_hash only"
            )
    map_names = {m.name for m in maps}

    event = None
    if "event" in doc:
        ev = _Reader(source, top.get("event", dict), "event")
        event = EventSpec(
            ev.get("struct", str),
            ev.get("ringbuf", str),
            ev.get("lost_map", str, ""),
            ev.strings("fields"),
        )
        if event.lost_map and event.lost_map not in map_names:
            raise ManifestError(f"{source}: event.lost_map: no map named {event.lost_map!r}")

    metrics = []
    features = tuple(
        Feature(
            f.get("name", str),
            f.get("help", str),
            f.get("default", bool, False),
            f.get("label", bool, False),
        )
        for f in top.tables("features")
    )
    feature_names = {f.name for f in features}
    for hook in hooks:
        for point in hook.points:
            if point.feature and point.feature not in feature_names:
                raise ManifestError(
                    f"{source}: hooks: {point.target}: no feature named {point.feature!r}"
                )
    for m in top.tables("metrics"):
        kernel_source = m.get("source", str, "")
        if kernel_source:
            labels = tuple(_source_label(lb) for lb in m.tables("labels"))
        else:
            labels = tuple(_label(lb) for lb in m.tables("labels"))
        metric = Metric(
            m.get("name", str),
            m.choice("type", METRIC_TYPES),
            "" if kernel_source else m.get("map", str),
            m.get("help", str),
            labels,
            float(m.get("scale", (int, float), 1.0)),
            m.get("buckets", int, 0),
            m.get("value", str, ""),
            _top(m, labels),
            _sum_from(m),
            kernel_source,
            m.get("feature", str, ""),
            m.get("expose", bool, True),
            m.get("unless", str, ""),
        )
        if kernel_source:
            if kernel_source not in SOURCES:
                raise ManifestError(
                    f"{source}: metrics {metric.name}: no source {kernel_source!r} "
                    f"(known: {', '.join(sorted(SOURCES))})"
                )
            if "map" in m.table or metric.type == "histogram":
                raise ManifestError(
                    f"{source}: metrics {metric.name}: a source metric is a counter or "
                    "gauge, and has no map"
                )
        elif metric.map not in map_names:
            raise ManifestError(f"{source}: metrics {metric.name}: no map named {metric.map!r}")
        for named in (metric.feature, metric.unless, *(lb.feature for lb in labels)):
            if named and named not in feature_names:
                raise ManifestError(f"{source}: metrics {metric.name}: no feature named {named!r}")
        if (metric.type == "histogram") != (metric.buckets > 1):
            raise ManifestError(
                f"{source}: metrics {metric.name}: buckets (> 1) goes with type histogram only"
            )
        # Slots labels split an integer key, or the index of an array value
        # member (value = "NAME[]"; then beside a struct key's field labels).
        kinds = {bool(lb.field) for lb in labels if lb.field != CPU_FIELD}
        if not metric.value.endswith("[]") and len(kinds) > 1:
            raise ManifestError(
                f"{source}: metrics {metric.name}: labels use either field or slots, not both"
            )
        metrics.append(metric)
    names = [m.name for m in metrics]
    for twice in {n for n in names if names.count(n) > 1}:
        # one name, two specs: only as a feature's and the same unless it
        specs = [m for m in metrics if m.name == twice]
        if len(specs) != 2 or not any(
            a.feature and not a.unless and b.unless == a.feature and not b.feature
            for a, b in (specs, specs[::-1])
        ):
            raise ManifestError(
                f"{source}: metrics: {twice} used twice (allowed once with feature = F "
                "and once with unless = F)"
            )
    for metric in metrics:
        for _, other in metric.sum_from.metrics if metric.sum_from else ():
            if other not in names:
                raise ManifestError(f"{source}: metrics {metric.name}: sum_from: no {other!r}")

    return Manifest(
        name,
        probe.get("summary", str),
        path,
        program,
        hooks,
        tuple(offsets),
        maps,
        event,
        tuple(metrics),
        features=features,
        description=probe.get("description", str, ""),
        dashboard=_dashboard(top, probe.get("summary", str)),
        rank=probe.get("rank", int, 100),
        on_demand=probe.get("on_demand", bool, False),
    )


def _points(h: _Reader) -> tuple[Point, ...]:
    if "attach" not in h.table:
        points: tuple[Point, ...] = (_point(h),)
    else:
        points = tuple(_point(p) for p in h.tables("attach"))
    if not points:
        raise h._fail("attach", "at least one attach point is required")
    kind = h.table.get("kind")
    deferred = [p for p in points if p.deferred and (p.kind or kind) not in ATTACHED_BY_FD]
    if deferred:
        # a deferred point is attached later from its program's fd alone
        raise h._fail("deferred", f"{deferred[0].target}: only tp_btf or raw_tracepoint defer")
    return points


ATTACHED_BY_FD = ("tp_btf", "raw_tracepoint")  # a link from the program's fd (+ name)


def _point(p: _Reader) -> Point:
    return Point(
        p.get("target", str),
        p.get("function", str),
        p.get("stream_only", bool, False),
        p.get("min_args", int, 0),
        p.strings("fields"),
        p.choice("kind", HOOK_KINDS) if "kind" in p.table else "",
        p.get("optional", bool, False),
        feature=p.get("feature", str, ""),
        deferred=p.get("deferred", bool, False),
    )


def _source_label(lb: _Reader) -> Label:
    """A label of a kernel-counted metric: a field of its source's rows (by
    default the label's own name), already the text the label shows."""
    name = lb.get("name", str)
    return Label(name, 0, "", lb.get("field", str, name))


def _label(lb: _Reader) -> Label:
    field = lb.get("field", str, "")
    slots = lb.get("slots", int, 0) if field else lb.positive("slots")
    return Label(
        lb.get("name", str),
        slots,
        lb.get("decoder", str, "uint"),
        field,
        lb.get("feature", str, ""),
    )


def _top(m: _Reader, labels: tuple[Label, ...]) -> TopPanel | None:
    """A metric's `top` panel: a table (title, by, unit, scale), false for
    none; by default a counter's rate grouped by its labels but cpu."""
    value = m.table.get("top")
    if value is False or (value is None and m.table.get("type") != "counter"):
        return None
    if value is None:
        by = tuple(lb.name for lb in labels if lb.name not in ("cpu", "netns_name"))
        return TopPanel(m.get("name", str), by)
    t = _Reader(m.source, m.get("top", dict), f"{m.where}.top")
    by = t.strings("by")
    unknown = [b for b in by if b not in {lb.name for lb in labels}]
    if unknown:
        raise t._fail("by", f"no label {unknown[0]!r}")
    return TopPanel(
        t.get("title", str), by, t.get("unit", str, "/s"), t.get("scale", (int, float), 1.0)
    )


def _sum_from(m: _Reader) -> SumFrom | None:
    if "sum_from" not in m.table:
        return None
    if m.table.get("type") != "histogram":
        raise m._fail("sum_from", "goes with type histogram only")
    if isinstance(m.table["sum_from"], str):
        return SumFrom((("", m.get("sum_from", str)),))
    t = _Reader(m.source, m.get("sum_from", dict), f"{m.where}.sum_from")
    by = t.get("metrics", dict)
    if not all(isinstance(v, str) for v in by.values()):
        raise t._fail("metrics", "expected label value = metric name")
    return SumFrom(tuple(by.items()), t.get("label", str))


def _dashboard(top: _Reader, summary: str) -> Dashboard:
    if "dashboard" not in top.table:
        return Dashboard(summary, ())
    d = _Reader(top.source, top.get("dashboard", dict), "dashboard")
    panels = tuple(
        Panel(
            p.get("title", str),
            p.get("unit", str, "short"),
            tuple(
                Target(t.get("legend", str, ""), t.get("expr", str)) for t in p.tables("targets")
            ),
        )
        for p in d.tables("panels")
    )
    return Dashboard(d.get("title", str, summary), panels)


def _check_needs(h: _Reader) -> list[str]:
    needs = list(h.strings("needs"))
    for n in needs:
        if n not in NEEDS:
            raise h._fail("needs", f"{n!r} is not one of {', '.join(NEEDS)}")
    return needs


def load(path: Path, bpf_dir: Path) -> Manifest:
    manifest = parse(path.read_text(), path, bpf_dir)
    if manifest.hooks and not manifest.program.is_file():
        raise ManifestError(f"{path.name}: its program {manifest.program.name} is missing")
    return manifest
