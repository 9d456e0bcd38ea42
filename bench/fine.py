"""Fine A/B: the exporter's programs loaded once, attached and detached
between short intervals of one run of a workload (a phase of the bench:
fine_phase.py).

A whole-tool arm resolves a throughput ratio to about ±0.05 on this VM: the
untraced rate moves between runs seconds apart by more than a probe costs
(steps of ~10% lasting seconds, with no steal time to show for them). Here
only the attachments change. Intervals come in pairs, off then on, then on
then off, so what drifts over seconds cancels within a pair, and the figure
is the median of the pairs' on/off ratios. (Until 2026-12-02 each slice was
a run of its own, 12 pairs of 0.5 s: the median of churn's ratios to about
±1.5%, and iperf3's slices each carried its start and slow start.)

The programs are attached or detached as each interval ends, which takes a
few ms (up to ~15 ms for every probe's 15 attachments); churn leaves the
first 30 ms of each interval uncounted for it (GUARD). iperf3 counts the
whole interval: that share of it pulls a ratio toward 1 by as much of the
gap (under 1% of it for the core probes' few attachments). A toggle that
comes later than that spoils the intervals it touches, which are left out
with their pairs (GUARD); the slowest toggle is reported.

The programs are the exporter's: its probes, built with the same flags
(Probe.attach, what `pyprobe export` loads), or the floor arm's empty ones.
What this leaves out is the daemon's own CPU between scrapes (the bench
waits for it to go idle; the whole-tool arms include it). The stream arm is
the command itself, `pyprobe tcpstates -j` to /dev/null, run in the helper's
process: its consumer works while the programs are attached and sleeps
while they are not, so its cost is in the ratio.

The trace arm is `pyprobe trace`'s program with a filter that matches
nothing (TRACE_NOTHING), streaming as the command attaches it, at rest as
the command is once nothing has matched for --rest-after seconds (only the
entries where the filter runs attached: probes/trace.py): the cost of
having it attached while no packet is traced.

As a helper (`python -m bench.fine default|all|floor|stream|trace`, run from the
repo root, as measure() runs it): attaches the
arm's programs, finds its links in /proc/self/fdinfo and closes them (the
programs and maps stay loaded), prints "ready N" (N attach points), then
answers each "on" or "off" line with "ok" once attached or detached, and
exits at end of input. (BPF_LINK_DETACH would let the bench detach another
process's links; the kernel refuses it for raw tracepoint links.)
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

ROOT = Path(__file__).resolve().parents[1]  # where `python -m bench.fine` finds the package

ARMS = ("default", "all", "floor", "stream", "trace")
# what each exporter arm turns on, as --probe would (Registry.select)
SELECT = {"default": (), "all": ("*.all",)}
STREAM = ("tcpstates", "-j")  # the stream arm's command (pyprobe ...), as arms.py runs it
# The trace arm's filter: an address the workloads never use, so the filter
# runs where each packet enters a device's path and matches nothing (the
# issue's "attached with a filter that matches nothing").
TRACE_NOTHING = "host 10.99.99.99"
_KEEP: list[object] = []  # what owns the loaded programs, alive until exit


# An interval counts only if the change of state before it was done within
# its first GUARD seconds (churn does not count them: workloads.py), and no change
# fell later in it. A toggle takes a few ms, but now and then several
# seconds (seen: 1-15 s, every probe, the floor, the stream, under churn), and the
# lines that came meanwhile are read late: the intervals that follow are not
# in the state planned for them until the reading catches up.
GUARD = 0.03


@dataclass(frozen=True)
class Intervals:
    """A workload measured within one run of it: run(count) starts it for
    `count` intervals and yields each one's figure as it ends; the first
    `warmup` are left out, and then the pairs' intervals follow."""

    run: Callable[[int], Iterator[float]]
    pairs: int
    seconds: float  # each interval's length
    guard: float = GUARD
    warmup: int = 2


def schedule(pairs: int) -> list[str]:
    """The intervals' states: off then on, then on then off, and so on."""
    return [w for i in range(pairs) for w in (("off", "on") if i % 2 == 0 else ("on", "off"))]


def _attach(arm: str) -> None:
    """Attach the arm's programs as its tool does: the exporter's probes
    (Probe.attach, built as `pyprobe export` builds them) or the floor's
    empty programs."""
    if arm == "floor":
        from . import floor

        _KEEP.append(floor.attach()[0])
        return
    from pyprobe.load.bcc import BccLoader
    from pyprobe.probes import default

    registry = default()
    chosen = {"trace": None} if arm == "trace" else registry.select(SELECT[arm])
    for name, features in chosen.items():
        probe = registry.create(name, None, BccLoader(), features)
        if arm == "trace":  # as `pyprobe trace` attaches it: the filter in, streaming
            probe.configure(expression=TRACE_NOTHING)
            probe.attach(stream=True)
            probe.rest()  # as it is once nothing has matched for --rest-after seconds
        else:
            probe.attach()
        _KEEP.append(probe)
        if probe.hook is None:
            continue  # the kernel's own counters: nothing to toggle
        for point in probe.hook.points:
            kind = point.kind or probe.hook.kind
            if kind not in ("raw_tracepoint", "tp_btf"):
                raise SystemExit(f"{name}: a {kind} hook (only raw tracepoints are toggled)")


TRACING = 26  # BPF_PROG_TYPE_TRACING: tp_btf, whose BTF id names its tracepoint


def _fdinfo() -> dict[int, dict[str, str]]:
    """This process's BPF programs and links: fd -> their fdinfo fields."""
    out = {}
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            text = Path(f"/proc/self/fdinfo/{fd}").read_text()
        except OSError:
            continue
        fields = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if "link_type" in fields or "prog_type" in fields:
            out[int(fd)] = fields
    return out


def _points() -> tuple[list[int], list[tuple[int, str | None]]]:
    """This process's links, and what attaches each again: its program's fd
    and the raw tracepoint's name (None for tp_btf). Found from fdinfo, so
    whichever loader attached them (the program cache hands back fds; the
    stream's command holds its own)."""
    info = _fdinfo()
    progs = {
        f["prog_id"]: (fd, int(f["prog_type"]))
        for fd, f in info.items()
        if "prog_type" in f and "link_type" not in f
    }
    links, points = [], []
    for fd, f in info.items():
        if "link_type" not in f:
            continue
        if f["link_type"] != "raw_tracepoint" or f["prog_id"] not in progs:
            raise SystemExit(f"a {f['link_type']} link (only raw tracepoints are toggled)")
        prog, kind = progs[f["prog_id"]]
        links.append(fd)
        points.append((prog, None if kind == TRACING else f["tp_name"]))
    return links, points


def _settled(timeout: float = 120.0) -> tuple[list[int], list[tuple[int, str | None]]]:
    """_points() once the stream's command has attached: some, and the same
    number for half a second."""
    seen, same, end = -1, 0, time.monotonic() + timeout
    while time.monotonic() < end:
        links, points = _points()
        same = same + 1 if links and len(links) == seen else 0
        if same >= 5:
            return links, points
        seen = len(links)
        time.sleep(0.1)
    raise SystemExit("the stream did not attach")


def _toggle(answer: TextIO, settle: bool) -> None:
    """Detach what this process attached (closing its links leaves the
    programs and maps loaded), then attach and detach it again on each "on"
    and "off" line. Nothing here closes the probes or the stream: we leave by
    os._exit, and the kernel frees the rest."""
    from pyprobe.kernel import programs

    try:
        links, points = _settled() if settle else _points()
    except SystemExit as e:
        print(e, file=sys.stderr, flush=True)
        os._exit(1)
    for fd in links:
        os.close(fd)
    attached: list[int] = []
    print(f"ready {len(points)}", file=answer, flush=True)
    for line in sys.stdin:
        if line.strip() == "on" and not attached:
            attached = [programs.attach(fd, target) for fd, target in points]
        elif line.strip() == "off":
            for fd in attached:
                os.close(fd)
            attached = []
        print("ok", file=answer, flush=True)
    os._exit(0)


def helper(arm: str) -> None:
    answer = os.fdopen(os.dup(1), "w")
    if arm != "stream":
        _attach(arm)
        _toggle(answer, settle=False)
    # The stream arm is the command itself, `pyprobe tcpstates -j`, its
    # output to /dev/null as in the whole-tool arm: its consumer is part of
    # its cost. It runs here, in the main thread (it handles signals), and
    # the toggles from a thread once it has attached.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    threading.Thread(target=_toggle, args=(answer, True), daemon=True).start()
    from pyprobe.cli import cli

    cli.main(list(STREAM), prog_name="pyprobe", standalone_mode=False)
    print("the stream ended", file=sys.stderr, flush=True)
    os._exit(1)


def intervals(
    work: Intervals, state: Callable[[str], None]
) -> tuple[list[tuple[str, float]], list[float]]:
    """Each scheduled interval's state and figure, from one run (NaN where
    the state was not as planned: see GUARD), and how long each change of
    state within the run took (s)."""
    plan = schedule(work.pairs)
    state(plan[0])
    figures = work.run(work.warmup + len(plan))
    read: list[float] = []  # when each line (warm-up included) was read
    changes: list[tuple[float, float, str]] = []  # (began, done, to what)
    try:
        got = []
        for _ in range(work.warmup):
            next(figures, math.nan)
            read.append(time.monotonic())
        for k, word in enumerate(plan):
            got.append(next(figures, math.nan))
            read.append(time.monotonic())
            if k + 1 < len(plan) and plan[k + 1] != word:
                t = time.monotonic()
                state(plan[k + 1])
                changes.append((t, time.monotonic(), plan[k + 1]))
    finally:
        close = getattr(figures, "close", None)
        if close:
            close()
    # Where the intervals lie: a line is read as its interval ends, or later
    # (never earlier), so the run began at the earliest such estimate.
    began = min(t - (g + 1) * work.seconds for g, t in enumerate(read))
    out = []
    for k, (word, figure) in enumerate(zip(plan, got, strict=True)):
        start = began + (work.warmup + k) * work.seconds
        counted = (start + work.guard, start + work.seconds)
        overlap = any(b < counted[1] and d > counted[0] for b, d, _ in changes)
        before = [to for _, d, to in changes if d <= counted[0]]
        ok = not overlap and (before[-1] if before else plan[0]) == word
        out.append((word, figure if ok else math.nan))
    return out, [d - b for b, d, _ in changes]


def measure(arm: str, workloads: dict[str, Intervals]) -> dict[str, dict[str, object]]:
    """For each workload, the pairs' on/off ratios, median and quartiles,
    each interval's figure, and the slowest toggle (ms). A helper that cannot
    load gives {"error": ...}."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fine", arm],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None

    def state(word: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"fine A/B helper ({arm}) stopped answering")

    try:
        ready = proc.stdout.readline()
        if not ready.startswith("ready"):
            proc.kill()
            err = (proc.communicate()[1] or "").strip().splitlines()
            return {"error": {"why": err[-1] if err else f"exited {proc.returncode}"}}
        out: dict[str, dict[str, object]] = {}
        for name, work in workloads.items():
            figures, took = intervals(work, state)
            slowest = max(took, default=0.0) * 1e3
            state("off")
            on = [x for word, x in figures if word == "on"]
            off = [x for word, x in figures if word == "off"]
            # (an interval a client did not report is NaN: its pair is left out)
            ratios = [a / b for a, b in zip(on, off, strict=True) if b and math.isfinite(a / b)]
            if not ratios:
                out[name] = {"error": "no pair of intervals gave a figure", "on": on, "off": off}
                continue
            q1, _, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
            out[name] = {
                "ratio": statistics.median(ratios),
                "q1": q1,
                "q3": q3,
                "pairs": len(ratios),
                "on": on,
                "off": off,
                "toggle_ms": slowest,
            }
        return out
    finally:
        if proc.poll() is None:
            proc.stdin.close()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in ARMS:
        sys.exit(f"usage: {sys.argv[0]} {'|'.join(ARMS)}")
    helper(sys.argv[1])
