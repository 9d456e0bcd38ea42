"""Fine A/B: the exporter's programs loaded once, attached and detached
between short intervals of one run of a workload (a phase of bench/run.py).

A whole-tool arm resolves a throughput ratio to about ±0.05 on this VM: the
untraced rate moves between runs seconds apart by more than a probe costs
(steps of ~10% lasting seconds, with no steal time to show for them). Here
only the attachments change. Intervals come in pairs, off then on, then on
then off, so what drifts over seconds cancels within a pair, and the figure
is the median of the pairs' on/off ratios. (Until 2026-12-02 each slice was
a run of its own, 12 pairs of 0.5 s: the median of churn's ratios to about
±1.5%, and iperf3's slices each carried its start and slow start.)

The programs are attached or detached as each interval ends, which takes a
few ms (17 ms for every probe's 15 attachments); churn leaves the first
30 ms of each interval uncounted for it (run.FINE_GUARD). iperf3 counts the
whole interval: that share of it pulls a ratio toward 1 by as much of the
gap (under 1% of it for the core probes' few attachments). How long each
toggle took is reported.

The programs are the exporter's: its probes, built with the same flags
(Probe.attach, what `pyprobe export` loads), or the floor arm's empty ones.
What this leaves out is the daemon's own CPU between scrapes (the bench
waits for it to go idle; the whole-tool arms include it).

As a helper (`python bench/fine.py core|every|floor`): loads the programs,
detaches them, prints "ready N" (N attach points), then answers each "on" or
"off" line with "ok" once attached or detached, and exits at end of input.
"""

from __future__ import annotations

import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

ARMS = ("core", "every", "floor")
CORE = ("tcpstates", "drops")  # the core probes: also the exporter arm's --probe list (run.py)
_KEEP: list[object] = []  # what owns the loaded programs, alive until exit


@dataclass(frozen=True)
class Intervals:
    """A workload measured within one run of it: run(count) starts it for
    `count` intervals and yields each one's figure as it ends; the first
    `warmup` are left out, and then the pairs' intervals follow."""

    run: Callable[[int], Iterator[float]]
    pairs: int
    warmup: int = 2


def schedule(pairs: int) -> list[str]:
    """The intervals' states: off then on, then on then off, and so on."""
    return [w for i in range(pairs) for w in (("off", "on") if i % 2 == 0 else ("on", "off"))]


def _programs(arm: str) -> list[tuple[int, str | None]]:
    """(program fd, raw tracepoint name, or None for tp_btf: its BTF id names
    it) for each attach point of the arm."""
    if arm == "floor":
        import floor
        from bcc import BPF

        targets = floor.hooks()
        names = floor.names(targets)
        bpf = BPF(text=floor.source(names))
        _KEEP.append(bpf)
        return [
            (bpf.load_func(n.encode(), BPF.RAW_TRACEPOINT).fd, t)
            for t, n in zip(targets, names, strict=True)
        ]
    from pyprobe import registry

    out: list[tuple[int, str | None]] = []
    for name in CORE if arm == "core" else registry.names():
        probe = registry.create(name)
        probe.attach()
        _KEEP.append(probe)
        fds, hook = probe.program_fds(), probe.hook
        assert hook is not None
        for point in hook.points:
            kind = point.kind or hook.kind
            if kind not in ("raw_tracepoint", "tp_btf"):
                raise SystemExit(f"{name}: a {kind} hook (only raw tracepoints are toggled)")
            out.append((fds[point.function], point.target if kind == "raw_tracepoint" else None))
    return out


def _links() -> list[int]:
    """This process's BPF link descriptors (their fdinfo names a link_type)."""
    found = []
    for fd in os.listdir("/proc/self/fdinfo"):
        try:
            if "link_type:" in Path(f"/proc/self/fdinfo/{fd}").read_text():
                found.append(int(fd))
        except OSError:
            continue
    return found


def helper(arm: str) -> None:
    from pyprobe import tpbtf

    points = _programs(arm)
    # Probe.attach attached them: closing the links detaches them and leaves
    # the programs and maps loaded. Nothing here closes the probes again (we
    # leave by os._exit, and the kernel frees the rest).
    for fd in _links():
        os.close(fd)
    attached: list[int] = []
    print(f"ready {len(points)}", flush=True)
    for line in sys.stdin:
        if line.strip() == "on" and not attached:
            attached = [tpbtf.attach(fd, target) for fd, target in points]
        elif line.strip() == "off":
            for fd in attached:
                os.close(fd)
            attached = []
        print("ok", flush=True)
    os._exit(0)


def intervals(work: Intervals, state: Callable[[str], None]) -> list[tuple[str, float]]:
    """Each scheduled interval's state and figure, from one run."""
    plan = schedule(work.pairs)
    state(plan[0])
    figures = work.run(work.warmup + len(plan))
    try:
        for _ in range(work.warmup):
            next(figures, math.nan)
        out = []
        for k, word in enumerate(plan):
            out.append((word, next(figures, math.nan)))
            if k + 1 < len(plan) and plan[k + 1] != word:
                state(plan[k + 1])
        return out
    finally:
        close = getattr(figures, "close", None)
        if close:
            close()


def measure(arm: str, workloads: dict[str, Intervals]) -> dict[str, dict[str, object]]:
    """For each workload, the pairs' on/off ratios, median and quartiles,
    each interval's figure, and the slowest toggle (ms). A helper that cannot
    load gives {"error": ...}."""
    proc = subprocess.Popen(
        [sys.executable, __file__, arm],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    took: list[float] = []

    def state(word: str) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        t = time.monotonic()
        proc.stdin.write(word + "\n")
        proc.stdin.flush()
        if proc.stdout.readline().strip() != "ok":
            raise RuntimeError(f"fine A/B helper ({arm}) stopped answering")
        took.append(time.monotonic() - t)

    try:
        ready = proc.stdout.readline()
        if not ready.startswith("ready"):
            proc.kill()
            err = (proc.communicate()[1] or "").strip().splitlines()
            return {"error": {"why": err[-1] if err else f"exited {proc.returncode}"}}
        out: dict[str, dict[str, object]] = {}
        for name, work in workloads.items():
            took.clear()
            figures = intervals(work, state)
            slowest = max(took) * 1e3
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
