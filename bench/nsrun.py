"""The ns/run pass: after an arm's throughput run, a shorter pass of the
packet and churn workloads with kernel.bpf_stats_enabled on, and each of
its programs' ns/run and runs/s over it (from `bpftool prog show`).
"""

from __future__ import annotations

import time
from pathlib import Path

from .arms import Arm
from .workloads import Workloads

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
STATS_SECONDS = 0.5  # each workload of the ns/run pass (iperf3 left out)


def measure(arm: Arm, work: Workloads) -> tuple[dict, dict, float]:
    """The pass, kernel.bpf_stats_enabled on for it: the arm's programs'
    counters before and after it, and its seconds."""
    STATS.write_text("1")
    before = arm.run_stats()
    t1 = time.monotonic()
    if arm.cmd is not None:
        work.run(STATS_SECONDS, iperf=False)
    elapsed = time.monotonic() - t1
    after = arm.run_stats()
    STATS.write_text("0")
    return before, after, elapsed


def per_program(before: dict, after: dict, elapsed: float) -> dict[str, tuple[float, float]]:
    """(ns/run, runs/s) of each program that ran in the pass."""
    # Programs of one arm with the same name (e.g. on_raw_tp in two
    # probes) are added up: total time / total runs.
    per_name: dict[str, list[int]] = {}
    for pid, (prog, ns1, n1) in after.items():
        _, ns0, n0 = before.get(pid, (prog, 0, 0))
        acc = per_name.setdefault(prog, [0, 0])
        acc[0] += ns1 - ns0
        acc[1] += n1 - n0
    return {prog: (ns / runs, runs / elapsed) for prog, (ns, runs) in per_name.items() if runs}
