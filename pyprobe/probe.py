"""The Probe: one interface for the CLI, the exporter and the tests.

available() -> which hook this kernel allows, and why
attach()    -> load + attach (optionally with the event stream)
collect()   -> Prometheus metric families, read from the maps now
rows()      -> the same numbers as plain dicts, for tables and JSON
events()    -> decoded per-event records from the ring buffer
detach()    -> nothing left in the kernel; also on `with` exit
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import structs
from .decoders import DECODERS
from .errors import PyprobeError
from .hooks import Choice, choose
from .kernel import KernelEnv
from .loader import BccLoader, Loader, Program, preflight
from .manifest import Hook, Manifest
from .manifest import Metric as MetricSpec

PREFIX = "pyprobe_"
# What a Probe loads with when none is given; unit tests swap in a fake.
DEFAULT_LOADER: Callable[[], Loader] = BccLoader


class Probe:
    def __init__(
        self, manifest: Manifest, env: KernelEnv | None = None, loader: Loader | None = None
    ) -> None:
        self.manifest = manifest
        self.env = env or KernelEnv.detect()
        self.loader: Loader = loader or DEFAULT_LOADER()
        self.program: Program | None = None
        self.streaming = False
        self._pending: deque[dict[str, Any]] = deque()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def hook(self) -> Hook | None:
        return self.program.hook if self.program else None

    # -- lifecycle -------------------------------------------------------------
    def available(self) -> Choice:
        return choose(self.manifest, self.env)

    def attach(self, stream: bool = False, cflags: Sequence[str] = ()) -> None:
        if self.program is not None:
            return
        if isinstance(self.loader, BccLoader):
            preflight(self.env)  # first: a missing privilege explains everything after it
        choice = self.available()
        if choice.hook is None:
            raise PyprobeError(f"{self.name}: no usable hook on this kernel: {choice.reason}")
        if stream and self.manifest.event is None:
            raise PyprobeError(f"{self.name}: has no event stream")
        flags = [*choice.offsets.cflags, *(["-DSTREAM"] if stream else []), *cflags]
        self.program = self.loader.load(self.manifest.program, choice.hook, flags)
        self.streaming = stream
        if stream and self.manifest.event:
            self.program.open_ringbuf(self.manifest.event.ringbuf, self._on_event)

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
    def _on_event(self, raw: bytes) -> None:
        self._pending.append(self.decode(raw))

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

    # -- aggregates --------------------------------------------------------------
    def _metric_specs(self) -> Iterator[MetricSpec]:
        stream_only = {m.name for m in self.manifest.maps if m.stream_only}
        for spec in self.manifest.metrics:
            if spec.map not in stream_only or self.streaming:
                yield spec

    def samples(self, spec: MetricSpec) -> list[tuple[tuple[str, ...], int]]:
        """(label values, value) for a manifest metric, keys split by label slots."""
        counts = self._attached().read_counts(spec.map)
        out = []
        for key, value in sorted(counts.items()):
            labels = []
            for label in reversed(spec.labels):
                key, index = divmod(key, label.slots)
                labels.append(DECODERS[label.decoder](index))
            out.append((tuple(reversed(labels)), value))
        return out

    def collect(self) -> Iterable[Metric]:
        for spec in self._metric_specs():
            names = [lb.name for lb in spec.labels]
            family: CounterMetricFamily | GaugeMetricFamily
            if spec.type == "counter":
                family = CounterMetricFamily(PREFIX + spec.name, spec.help, labels=names)
            else:
                family = GaugeMetricFamily(PREFIX + spec.name, spec.help, labels=names)
            for labels, value in self.samples(spec):
                family.add_metric(list(labels), value)
            yield family

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for spec in self._metric_specs():
            for labels, value in self.samples(spec):
                row: dict[str, Any] = {"metric": spec.name}
                row.update(zip((lb.name for lb in spec.labels), labels, strict=True))
                row["value"] = value
                rows.append(row)
        return rows
