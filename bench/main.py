"""`make bench`: pyprobe side by side with the bcc tools and bpftrace.

Arms alternate within each repetition (A/B/A/B...), every arm runs every
workload, and each figure is the median of the repetitions with its spread.
Writes bench/results.json and bench/RESULTS.md (date and machine included).

    .venv/bin/python -m bench [--reps 3] [--seconds 2] [--quick]
    .venv/bin/python -m bench --fine-arm trace   # one arm's fine A/B alone

The phases, in the order main() runs them: the whole-tool repetitions
(throughput.py; the arms in arms.py, the workloads in workloads.py, each
arm's ns/run pass in nsrun.py), the fine A/B phase (fine_phase.py, fine.py),
the lossless rates (lossless.py), the exporter's scrapes and start-up
(scrape.py); then the report (report.py, judged by targets.py).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyprobe.lab.pair import VethPair

from . import costs, fine_phase, lossless, throughput
from .arms import ARMS, STREAMING, is_event
from .fine_phase import FINE_SLICES
from .nsrun import STATS
from .report import markdown
from .scrape import measure as scrape_measure
from .scrape import startup as scrape_startup
from .workloads import CHURN, Workloads

HERE = Path(__file__).resolve().parent


def machine() -> dict[str, str]:
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in Path("/proc/cpuinfo").read_text().splitlines()
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "kernel": platform.release(),
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "python": platform.python_version(),
        "host": platform.node(),
    }


def fine_only(arms: tuple[str, ...], quick: bool) -> None:
    """The fine A/B phase alone, for these arms: each workload's median
    on/off ratio [quartiles] and pairs on stderr, the whole result as JSON
    on stdout."""
    started = time.monotonic()
    subprocess.run(["gcc", "-O2", "-o", str(CHURN), str(HERE / "churn.c")], check=True)
    with VethPair(prefix="ppbench", net=95) as pair:
        work = Workloads(pair, 1.0)
        try:
            fine_ab = fine_phase.run(work, quick, started, only=arms)
        finally:
            work.close()
    for arm, res in fine_ab.items():
        for workload, r in res.items():
            if isinstance(r, dict) and "ratio" in r:
                print(
                    f"{arm}: {workload}: {r['ratio']:.3f} [{r['q1']:.3f}-{r['q3']:.3f}] "
                    f"({r['pairs']} pairs)",
                    file=sys.stderr,
                )
            else:
                print(f"{arm}: {workload}: {r}", file=sys.stderr)
    print(json.dumps({"date": dt.datetime.now(dt.timezone.utc).isoformat(), "machine": machine(),
                      "fine": fine_ab}))  # fmt: skip


def main() -> None:
    # Started in the background by a non-interactive shell, we inherit SIGINT
    # ignored, and so would every tool we start: Ctrl-C (how the arms are
    # stopped) would do nothing, and a tool killed 15 s later prints no loss
    # summary. Handled here, it is the default again in the children.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    # A SIGTERM (a run stopped from another shell) unwinds like Ctrl-C: the
    # finally blocks stop the servers, the tool and the namespaces (without
    # this they outlived the run).
    signal.signal(signal.SIGTERM, lambda *_: signal.default_int_handler(signal.SIGINT, None))
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--quick", action="store_true", help="1 rep, 1 s, 1k/10k sockets (a smoke run)")
    ap.add_argument("--report", action="store_true", help="re-render RESULTS.md from results.json")
    ap.add_argument(
        "--fine-arm",
        choices=list(fine_phase.FINE_ARMS),
        action="append",
        help="only the fine A/B phase, of this arm (repeat): printed as JSON, "
        "results.json and RESULTS.md left as they are",
    )
    args = ap.parse_args()
    if args.report:
        (HERE / "RESULTS.md").write_text(markdown(json.loads((HERE / "results.json").read_text())))
        return
    if args.fine_arm:
        fine_only(tuple(args.fine_arm), args.quick)
        return
    if args.quick:
        args.reps, args.seconds = 1, 1.0
    started = time.monotonic()
    if not shutil.which("bpftrace"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "bpftrace"],
            check=False,
            capture_output=True,
        )
    subprocess.run(["gcc", "-O2", "-o", str(CHURN), str(HERE / "churn.c")], check=True)
    old_stats = STATS.read_text().strip()
    STATS.write_text("0")
    # Streams print into files there, counted afterwards. On tmpfs a write is a
    # copy into memory, close to the issue's `> /dev/null` (the writer's CPU is
    # the same as on ext4 here, 0.51 s for 3 s at 300k lines/s), and no
    # flusher thread writes a run's hundreds of MB back to disk ~30 s later,
    # in the middle of some other arm's measurement.
    shm = Path("/dev/shm")
    logs = Path(tempfile.mkdtemp(prefix="pyprobe-bench-", dir=shm if shm.is_dir() else None))
    found: dict[str, dict] = {}
    ceiling: list[dict] = []
    try:
        with VethPair(prefix="ppbench", net=95) as pair:
            work = Workloads(pair, args.seconds)
            try:
                results = throughput.repetitions(work, args.reps, logs, started)
                fine_ab = fine_phase.run(work, args.quick, started)
                print(
                    f"[{time.monotonic() - started:5.0f}s] lossless rates",
                    file=sys.stderr,
                    flush=True,
                )
                ceiling = lossless.ceiling(CHURN, "127.0.0.1")
                for name in STREAMING:
                    cmd = ARMS[name]
                    assert cmd is not None
                    found[name] = lossless.search(
                        cmd,
                        logs / f"lossless-{cmd[0].rsplit('/', 1)[-1]}.log",
                        is_event(name),
                        CHURN,
                        "127.0.0.1",
                        18080,
                        ceiling,
                    )
            finally:
                work.close()
    finally:
        STATS.write_text(old_stats)
        # Counted, and what an arm that failed said is in results.json: on
        # tmpfs the logs would hold ~40 MB of memory until the next boot.
        shutil.rmtree(logs, ignore_errors=True)
    sockets = [1000, 10000] if args.quick else [1000, 10000, 100000]
    scrape = {}
    for n in sockets:
        print(
            f"[{time.monotonic() - started:5.0f}s] scrape with {n} sockets",
            file=sys.stderr,
            flush=True,
        )
        scrape[n] = scrape_measure(n, 10 if args.quick else 30)
    print(
        f"[{time.monotonic() - started:5.0f}s] start-up, compiling and with programs kept",
        file=sys.stderr,
        flush=True,
    )
    starts = scrape_startup(1 if args.quick else 3)
    report = {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "reps": args.reps,
        "seconds": args.seconds,
        "arms": results,
        "fine": fine_ab,
        "fine_slices": {w: (t, 2 if args.quick else n) for w, (t, n) in FINE_SLICES.items()},
        "fine_intervals": list(FINE_SLICES),  # (runs before 2026-12-02: slices, runs of their own)
        "scrape": scrape,
        "startup": starts,
        "lossless": found,
        "lossless_ceiling": ceiling,
        "duration_s": time.monotonic() - started,
    }
    (HERE / "results.json").write_text(json.dumps(report, indent=1))
    (HERE / "RESULTS.md").write_text(markdown(report))
    if not args.quick:  # what `pyprobe list` and `doctor` show, from this run
        costs.write(report)
    print((HERE / "RESULTS.md").read_text())
