"""The collectors the exporter registers: one per probe (its metric families,
read from the BPF maps at scrape time, label caps applied), and one for the
exporter itself — like node_exporter's per-collector success/duration and
ebpf_exporter's attach/program metrics."""

from __future__ import annotations

import logging
import platform
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .. import __version__
from ..core.probe import Probe
from ..core.series import PREFIX
from ..logs import kv
from . import bpfstats
from .caps import LabelCaps

log = logging.getLogger("pyprobe.exporter")


@dataclass
class ScrapeResult:
    success: bool = True
    duration: float = 0.0


@dataclass
class ProbeState:
    """A probe as the exporter holds it: attached or not, and why."""

    name: str
    probe: Probe | None
    error: str = ""
    loading: bool = True  # still being compiled or loaded: no series yet
    last: ScrapeResult = field(default_factory=ScrapeResult)

    @property
    def attached(self) -> bool:
        return self.probe is not None and self.probe.attached


class ProbeCollector:
    """A probe's metric families at scrape time. A failure is logged once per
    distinct message and reported through pyprobe_scrape_collector_success."""

    def __init__(self, state: ProbeState, caps: LabelCaps) -> None:
        self.state, self.caps = state, caps
        self._logged: set[str] = set()

    def collect(self) -> Iterable[Metric]:
        probe = self.state.probe
        if probe is None or not probe.attached:
            return []
        start = time.perf_counter()
        try:
            families = [self.caps.apply(f) for f in probe.collect()]
            self.state.last = ScrapeResult(True, time.perf_counter() - start)
            return families
        except Exception as e:  # a scrape must not take the daemon down
            message = f"{type(e).__name__}: {e}"
            if message not in self._logged:
                self._logged.add(message)
                log.error("collector failed", extra=kv(probe=self.state.name, error=message))
            self.state.last = ScrapeResult(False, time.perf_counter() - start)
            return []


class SelfCollector:
    def __init__(self, states: Mapping[str, ProbeState], caps: LabelCaps, reload: dict) -> None:
        self.states, self.caps, self.reload = states, caps, reload
        self.stats_on = False  # set when we hold a BPF_ENABLE_STATS fd

    def collect(self) -> Iterable[Metric]:
        build = GaugeMetricFamily(
            PREFIX + "build_info",
            "pyprobe's version and the Python running it.",
            labels=["version", "python_version"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build

        attached = GaugeMetricFamily(
            PREFIX + "probe_attached",
            "1 when the probe is attached (hook: how), 0 when it could not be.",
            labels=["probe", "hook"],
        )
        success = GaugeMetricFamily(
            PREFIX + "scrape_collector_success",
            "Whether the probe's collector succeeded at this scrape.",
            labels=["collector"],
        )
        duration = GaugeMetricFamily(
            PREFIX + "scrape_collector_duration_seconds",
            "How long the probe's collector took at this scrape (set when it ran).",
            labels=["collector"],
        )
        lost = CounterMetricFamily(
            PREFIX + "events_lost",
            "Events lost because a ring buffer was full, by probe.",
            labels=["probe"],
        )
        entries = GaugeMetricFamily(
            PREFIX + "map_entries", "Entries in use in each hash map.", labels=["probe", "map"]
        )
        capacity = GaugeMetricFamily(
            PREFIX + "map_max_entries", "Capacity of each hash map.", labels=["probe", "map"]
        )
        errors = CounterMetricFamily(
            PREFIX + "map_update_errors",
            "Counts dropped because a hash map was full (it holds map_max_entries).",
            labels=["probe", "map"],
        )
        run_seconds = CounterMetricFamily(
            PREFIX + "bpf_program_run_seconds",
            "Time spent running each BPF program (needs --bpf-stats or kernel.bpf_stats_enabled).",
            labels=["probe", "program"],
        )
        runs = CounterMetricFamily(
            PREFIX + "bpf_program_runs",
            "Times each BPF program ran (needs --bpf-stats or kernel.bpf_stats_enabled).",
            labels=["probe", "program"],
        )
        stats = self.stats_on or bpfstats.stats_enabled()
        for name, state in sorted(self.states.items()):
            if state.loading:
                continue  # neither attached nor failed yet (the daemon serves early)
            probe = state.probe
            hook = probe.hook_label if probe is not None and state.attached else ""
            attached.add_metric([name, hook], 1 if state.attached else 0)
            if not state.attached or probe is None:
                continue
            success.add_metric([name], 1 if state.last.success else 0)
            duration.add_metric([name], state.last.duration)
            lost.add_metric([name], probe.lost())
            failed = probe.map_errors()  # one read of the error counters per probe
            for map_name, used, cap in probe.map_usage():
                entries.add_metric([name, map_name], used)
                capacity.add_metric([name, map_name], cap)
                errors.add_metric([name, map_name], failed.get(map_name, 0))
            if stats:
                for function, fd in probe.program_fds().items():
                    try:
                        ns, count = bpfstats.prog_run_stats(fd)
                    except OSError:
                        continue
                    run_seconds.add_metric([name, function], ns / 1e9)
                    runs.add_metric([name, function], count)
        yield from (attached, success, duration, lost, entries, capacity, errors)
        if stats:
            yield run_seconds
            yield runs

        folded = CounterMetricFamily(
            PREFIX + "series_folded",
            'Distinct label values folded into "other" by the label caps.',
            labels=["metric", "label"],
        )
        for family, label, n in self.caps.folded():
            folded.add_metric([family, label], n)
        yield folded

        ok = GaugeMetricFamily(
            PREFIX + "config_last_reload_successful",
            "Whether the last configuration reload (SIGHUP) succeeded.",
        )
        ok.add_metric([], 1 if self.reload["ok"] else 0)
        yield ok
        when = GaugeMetricFamily(
            PREFIX + "config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully.",
        )
        when.add_metric([], self.reload["at"])
        yield when
