"""The fine A/B phase as the bench runs it (fine.py does the measuring):
its arms, each workload's intervals and pairs, and the phase itself.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator

from . import fine
from .arms import FLOOR, settle
from .workloads import CHURN_LO, CHURN_VETH, IPERF, Workloads

# The fine A/B phase (fine.py): its arms, as the whole-tool arms they stand
# for.
FINE_ARMS = {
    "default": "pyprobe exporter, default",
    "all": "pyprobe exporter, every probe and feature",
    "floor": FLOOR,
    "stream": "pyprobe tcpstates -j (stream)",
    "trace": "pyprobe trace, a filter matching nothing",
}
# Each workload's figures come from one run of it, interval by interval
# (fine.Intervals; the programs toggled as each ends), not from slices that
# were runs of their own: those carried each client's start (and iperf3's
# slow start), and 12 pairs of 0.5 s gave churn's pairs quartiles of ±2-4%;
# 32 pairs of 0.25 s intervals, ±0.5-1% (17 s a workload). Per workload: the
# interval's seconds, the pairs.
FINE_SLICES = {CHURN_LO: (0.25, 32), CHURN_VETH: (0.25, 32), IPERF: (0.25, 32)}


def fine_slices(work: Workloads, quick: bool) -> dict[str, fine.Intervals]:
    """fine.measure's workloads: each one's run by intervals, and the pairs."""

    def intervals_of(workload: str, seconds: float) -> Callable[[int], Iterator[float]]:
        return lambda count: work.intervals(workload, count, seconds)

    return {
        w: fine.Intervals(intervals_of(w, t), 2 if quick else n, t)
        for w, (t, n) in FINE_SLICES.items()
    }


def run(
    work: Workloads, quick: bool, started: float, only: tuple[str, ...] = ()
) -> dict[str, dict]:
    """fine.measure for each of FINE_ARMS (or those in only), by its short name."""
    fine_ab: dict[str, dict] = {}
    for which in only or tuple(FINE_ARMS):
        print(
            f"[{time.monotonic() - started:5.0f}s] fine A/B: {FINE_ARMS[which]}",
            file=sys.stderr,
            flush=True,
        )
        slices = fine_slices(work, quick)
        if which == "stream":  # (a stream of TCP state changes: iperf3 makes none)
            slices.pop(IPERF)
        fine_ab[which] = fine.measure(which, slices)
        settle()
    return fine_ab
