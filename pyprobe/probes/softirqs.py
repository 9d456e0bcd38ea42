"""softirqs: the time-per-run histogram takes its sum from the time counter.

softirq_exit is the busiest stateful program (every softirq run): it adds a
run's time to time_ns[vector] and counts it in the histogram's slot, and
keeps no histogram sum, which would be the same deltas added a second time
(one map touch more on every run). The sum per vector is time_ns over CPUs.
"""

from __future__ import annotations

from ..manifest import Metric as MetricSpec
from ..probe import Probe
from ..registry import register

HISTOGRAM, TIME = "softirq_run_seconds", "softirq_seconds_total"


@register("softirqs")
class Softirqs(Probe):
    def histograms(self, spec: MetricSpec) -> list[tuple[tuple[str, ...], list[int], float]]:
        out = super().histograms(spec)
        if spec.name != HISTOGRAM:
            return out
        time = next(m for m in self.manifest.metrics if m.name == TIME)
        by_vector: dict[str, float] = {}
        for (_cpu, vector), seconds in self.samples(time):  # labels: cpu, vector
            by_vector[vector] = by_vector.get(vector, 0.0) + seconds
        return [(labels, buckets, by_vector.get(labels[0], 0.0)) for labels, buckets, _ in out]
