"""How the bench judges the throughput targets (bench/targets.py targets()):
by the fine A/B phase's ratios where a run has them, the whole-tool arms'
shown beside them; by the whole-tool arms in runs from before that phase.
Checked on a recorded run (bench/results.json) with a fine phase added."""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path

from bench import fine_phase
from bench.report import markdown
from bench.targets import med, targets
from bench.workloads import CHURN_LO, IPERF, iperf_rates

BENCH = Path(__file__).resolve().parents[2] / "bench"

DEFAULT, EVERY = "pyprobe exporter, default", "pyprobe exporter, every probe and feature"


def recorded() -> dict:
    """bench/results.json, its exporter arms under today's names (a run from
    before issue 29 had "core probes" and "every probe" in their place)."""
    r = json.loads((BENCH / "results.json").read_text())
    renamed = {"pyprobe exporter, core probes": DEFAULT, "pyprobe exporter, every probe": EVERY}
    r["arms"] = {renamed.get(k, k): v for k, v in r["arms"].items()}
    fine_renamed = {"core": "default", "every": "all"}
    r["fine"] = {fine_renamed.get(k, k): v for k, v in (r.get("fine") or {}).items()}
    return r


RECORDED = recorded()


def fine(ratio: float) -> dict:
    return {
        w: {
            "ratio": ratio,
            "q1": ratio - 0.01,
            "q3": ratio + 0.01,
            "pairs": fine_phase.FINE_SLICES[w][1],
            "on": [],
            "off": [],
        }
        for w in fine_phase.FINE_SLICES
    }


def verdicts(r: dict) -> dict[str, tuple[str, bool]]:
    return {target: (measured, ok) for target, measured, ok in targets(r)}


def test_without_a_fine_phase_the_whole_tool_arms_are_judged() -> None:
    r = copy.deepcopy(RECORDED)
    r.pop("fine", None)
    got = verdicts(r)
    measured, _ = got["exporter, default: churn ≥ 0.99"]
    assert "fine" not in measured
    base = med(r["arms"]["none"]["workloads"][CHURN_LO])
    default = med([v / base for v in r["arms"][DEFAULT]["workloads"][CHURN_LO]])
    assert measured.startswith(f"{default:.3f} / ")


def test_the_fine_phase_decides_and_the_whole_tool_figure_stays_beside_it() -> None:
    r = copy.deepcopy(RECORDED)
    r["fine"] = {"default": fine(0.991), "all": fine(0.949), "floor": fine(0.96)}
    r["fine_slices"] = fine_phase.FINE_SLICES
    got = verdicts(r)
    measured, ok = got["exporter, default: churn ≥ 0.99"]
    assert ok and measured.startswith("fine A/B 0.991 / 0.991 (whole tool: ")
    measured, ok = got["exporter, default: iperf3 ≥ 0.99"]
    assert ok and measured.startswith("fine A/B 0.991 (whole tool: ")
    # every probe and feature: judged against its floor, 0.949 / 0.96 = 0.989
    measured, ok = got["exporter, every probe and feature: churn within 2% of its floor"]
    assert ok and "the floor arm (its hooks, empty programs): fine A/B 0.960 / 0.960" in measured
    assert measured.endswith("ratio to the floor 0.989 / 0.989")
    r["fine"]["all"] = fine(0.93)  # 0.969 of the floor: more than 2% over it
    assert not verdicts(r)["exporter, every probe and feature: churn within 2% of its floor"][1]
    r["fine"]["default"] = fine(0.989)
    assert not verdicts(r)["exporter, default: iperf3 ≥ 0.99"][1]
    assert not verdicts(r)["exporter, default: churn ≥ 0.99"][1]
    r["fine"]["default"] = fine(0.991)
    table = markdown(r)
    assert "| pyprobe exporter, default | 0.991 [0.981\u20131.001] |" in table


def test_a_fine_arm_that_failed_is_reported_and_the_whole_tool_judged() -> None:
    r = copy.deepcopy(RECORDED)
    r["fine"] = {"default": {"error": {"why": "tcpstates: no usable hook"}}}
    r["fine_slices"] = fine_phase.FINE_SLICES
    measured, _ = verdicts(r)["exporter, default: churn ≥ 0.99"]
    assert "fine" not in measured
    table = markdown(r)
    assert "| pyprobe exporter, default | fails here: tcpstates: no usable hook |" in table


def test_a_workload_with_no_fine_figure_is_judged_by_the_whole_tool() -> None:
    r = copy.deepcopy(RECORDED)
    r["fine"] = {"default": fine(0.991), "all": fine(1.0), "floor": fine(0.96)}
    r["fine"]["default"][IPERF] = {
        "error": "no pair of intervals gave a figure",
        "on": [],
        "off": [],
    }
    r["fine_slices"] = fine_phase.FINE_SLICES
    measured, _ = verdicts(r)["exporter, default: iperf3 ≥ 0.99"]
    assert "fine" not in measured
    assert "| pyprobe exporter, default | 0.991 [0.981\u20131.001] | 0.991" in markdown(r)
    assert verdicts(r)["exporter, default: churn ≥ 0.99"][1]


def test_iperf3_interval_lines_are_read_and_its_summary_left_out() -> None:
    out = """Connecting to host 10.231.77.2, port 18082
[  5] local 10.231.77.1 port 46672 connected to 10.231.77.2 port 18082
[ ID] Interval           Transfer     Bitrate         Retr  Cwnd
[  5]   0.00-0.50   sec   841 MBytes  14109 Mbits/sec    0    535 KBytes
[  5]   0.50-1.00   sec  1.07 GBytes  18364.5 Mbits/sec  1379    370 KBytes
- - - - - - - - - - - - - - - - - - - - - - - - -
[ ID] Interval           Transfer     Bitrate         Retr
[  5]   0.00-1.00  sec  1.9 GBytes  16204 Mbits/sec  1379             sender
[  5]   0.00-1.00  sec  1.9 GBytes  16203 Mbits/sec                  receiver
"""
    assert list(iperf_rates(out.splitlines())) == [14109.0, 18364.5]


def _timed_run(seconds: float, calls: list[str]):
    """A workload whose lines come as its intervals end, whenever they are
    read (those that ended while the reader was away come at once)."""

    def run_(count: int):
        began = time.monotonic()
        for i in range(count):
            time.sleep(max(0.0, began + (i + 1) * seconds - time.monotonic()))
            calls.append(f"interval {i}")
            yield float(i)

    return run_


def test_intervals_of_one_run_follow_the_pairs_schedule() -> None:
    """The state changes as each interval ends, only when the next interval's
    differs; the warm-up runs in the first interval's state and is left out."""
    from bench import fine

    calls: list[str] = []
    work = fine.Intervals(_timed_run(0.05, calls), pairs=2, seconds=0.05, guard=0.02, warmup=1)
    got, took = fine.intervals(work, calls.append)
    assert len(took) == 2  # the two changes within the run
    assert got == [("off", 1.0), ("on", 2.0), ("on", 3.0), ("off", 4.0)]
    assert calls == [
        "off", "interval 0", "interval 1", "on", "interval 2", "interval 3", "off", "interval 4",
    ]  # fmt: skip


def test_a_change_of_state_that_comes_late_leaves_out_the_intervals_it_spoils() -> None:
    """A toggle that takes longer than the guard: the interval it lands in, and
    those read late after it, are NaN (their pairs are left out) until the
    reading catches up."""
    from bench import fine

    calls: list[str] = []

    def state(word: str) -> None:
        calls.append(word)
        if calls.count("on") == 1 and word == "on":
            time.sleep(0.25)  # the first attach stalls

    work = fine.Intervals(_timed_run(0.1, calls), pairs=3, seconds=0.1, guard=0.03, warmup=1)
    got, took = fine.intervals(work, state)
    assert max(took) >= 0.25
    words = [w for w, _ in got]
    assert words == ["off", "on", "on", "off", "off", "on"]
    figures = [x for _, x in got]
    assert figures[0] == 1.0 and figures[4:] == [5.0, 6.0]
    assert all(math.isnan(x) for x in figures[1:4])


def test_the_fine_table_says_how_it_was_measured() -> None:
    """Runs from before 2026-12-02 measured slices, each a run of its own;
    later ones, intervals of one run, with the guard and the slowest toggle."""
    r = copy.deepcopy(RECORDED)
    r["fine"] = {"default": fine(0.991), "all": fine(0.949), "floor": fine(0.96)}
    r["fine"]["all"][CHURN_LO]["toggle_ms"] = 18.4
    r["fine_slices"] = fine_phase.FINE_SLICES
    r.pop("fine_intervals", None)
    assert "Slices (each a run of its own): " in markdown(r)
    r["fine_intervals"] = list(fine_phase.FINE_SLICES)
    table = markdown(r)
    assert "Intervals: churn, loopback (conn/s) 0.25 s \u00d7 64;" in table
    assert "first 30 ms of each interval uncounted" in table
    assert "(the slowest took 18 ms)" in table
    r["fine"]["all"][CHURN_LO]["pairs"] = 29  # three left out: a toggle came late
    assert f"| {EVERY} | 0.949 [0.939\u20130.959] (29 of 32) | 0.949" in (markdown(r))


def test_the_stream_is_judged_by_its_fine_figure_and_the_whole_tool_s_losses() -> None:
    target = "streaming tcpstates ≥ 0.85 \u00d7 none (churn) with 0 lost (lost: the whole tool's)"
    r = copy.deepcopy(RECORDED)
    r["fine"] = {"stream": fine(0.88)}
    del r["fine"]["stream"][IPERF]  # (the stream arm runs churn only)
    r["fine_slices"] = fine_phase.FINE_SLICES
    for x in r["arms"]["pyprobe tcpstates -j (stream)"]["stream"]:
        x["lost"] = 0
    measured, ok = verdicts(r)[target]
    assert ok and measured.startswith("fine A/B 0.880 / 0.880 (whole tool: ")
    assert measured.endswith(", lost 0")
    r["arms"]["pyprobe tcpstates -j (stream)"]["stream"][0]["lost"] = 12
    measured, ok = verdicts(r)[target]
    assert not ok and measured.endswith(", lost 12")
    assert "| pyprobe tcpstates -j (stream) | 0.880 [0.870\u20130.890] | 0.880" in markdown(r)
