"""The whole-tool repetitions: every arm started as its tool, runs every
workload (bpf_stats off, as deployed), then the ns/run pass (nsrun.py), and
for the streams, the events they printed.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

from . import nsrun
from .arms import ARMS, STREAMING, Arm, is_event, settle
from .nsrun import STATS
from .workloads import Workloads


def order(rep: int) -> list[str]:
    """The arms of one repetition: `none` first and last, the others forward in
    even repetitions and backward in odd ones, so a drift of the machine over
    a repetition (this VM's throughput wanders by several %) is not always
    charged to the same arms."""
    arms = [name for name in ARMS if name != "none"]
    return ["none", *(arms if rep % 2 == 0 else arms[::-1]), "none"]


def stream_events(name: str, log: Path, text: str, seconds: float) -> dict[str, float | None]:
    with open(log, errors="replace") as f:
        events = sum(1 for line in f if is_event(name)(line))
    if name.startswith("pyprobe"):
        m = re.search(r"lost events: (\d+)", text)
        lost = int(m.group(1)) if m else None  # no summary: it did not exit cleanly
    else:
        lost = sum(int(n) for n in re.findall(r"[Ll]ost (\d+) samples", text))
    return {"events_per_s": events / seconds, "lost": lost}


def repetitions(work: Workloads, reps: int, logs: Path, started: float) -> dict[str, dict]:
    """Every arm in every repetition (in order(rep)): each one's figures,
    ns/run, stream events, start-up, or why it failed, by arm."""
    results: dict[str, dict] = {
        name: {"workloads": {}, "programs": {}, "stream": [], "error": ""} for name in ARMS
    }
    for rep in range(reps):
        for name in order(rep):
            cmd = ARMS[name]
            arm = Arm(
                name,
                cmd,
                logs / f"{rep}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log",
            )
            at = f"[{time.monotonic() - started:5.0f}s]"
            print(f"{at} rep {rep + 1}/{reps}: {name}", file=sys.stderr, flush=True)
            if not arm.start():
                results[name]["error"] = arm.error
                continue
            results[name].setdefault("startup_s", []).append(arm.startup)
            results[name].setdefault("settle_s", []).append(arm.settled)
            # Throughput as deployed: no run-time accounting. Then a
            # shorter pass of the packet and churn workloads with it,
            # for ns/run (two clock reads a run: the floor arm's cost).
            STATS.write_text("0")
            t0 = time.monotonic()
            figures = work.run()
            before, after, elapsed = nsrun.measure(arm, work)
            whole = time.monotonic() - t0
            text = arm.stop()
            for k, v in figures.items():
                results[name]["workloads"].setdefault(k, []).append(v)
            for prog, sample in nsrun.per_program(before, after, elapsed).items():
                results[name]["programs"].setdefault(prog, []).append(sample)
            if name in STREAMING:
                results[name]["stream"].append(stream_events(name, arm.log, text, whole))
                arm.log.write_text(text)  # counted: keep its end, not 100s of MB
            settle()
    return results
