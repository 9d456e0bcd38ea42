"""The highest event rate a streaming tool keeps up with, losing nothing.

The offered load steps up: connection attempts paced to a fixed rate from two
client processes, each to a port nobody listens on (SYN, RST, refused: two
TCP state changes, CLOSE -> SYN_SENT -> CLOSE, for a fraction of a whole
connection's work). That is the densest stream of state changes clients can
make here: ~200k events/s, where whole connections (~8 changes each) topped
out near 130k, below what pyprobe keeps up with. At each step the tool's
printed events are counted against the kernel's own count of state changes
(a counting program on the same tracepoint, loaded here). A step passes when
every event was printed and the clients kept to their schedule, or to what
they reach with no tool when that is less: a tool whose probes slow the
workload down "keeps up" only by slowing it, which is not a sustained rate.
The search stops at the first step that fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

REFERENCE = r"""
BPF_PERCPU_ARRAY(changes, u64, 1);
RAW_TRACEPOINT_PROBE(inet_sock_set_state)
{
    u32 zero = 0;
    u64 *n = changes.lookup(&zero);
    if (n)
        (*n)++;
    return 0;
}
"""
RATES = (5000, 10000, 20000, 30000, 40000, 50000, 60000, 70000, 80000, 90000, 100000)  # attempts/s
CLOSED_PORT = 18099  # nothing listens there: every attempt is refused
SECONDS = 2.0
CLIENTS = 2
KEPT_PACE = 0.95  # the clients reached at least this share of the offered rate


def pyprobe_event(line: str) -> bool:
    return line.startswith("{")


def bcc_event(line: str) -> bool:
    return re.match(r"^[0-9a-f]{6,}\s", line) is not None


class Output:
    """Complete lines a tool has written to its log since the last count."""

    def __init__(self, path: Path, is_event: Callable[[str], bool]) -> None:
        self.path, self.is_event = path, is_event
        self.offset, self.rest = 0, ""

    def new_events(self) -> int:
        with open(self.path, errors="replace") as f:
            f.seek(self.offset)
            text = f.read()
            self.offset = f.tell()
        text, _, self.rest = (self.rest + text).rpartition("\n")
        return sum(1 for line in text.splitlines() if self.is_event(line))

    def settle(self, quiet: float = 0.5, within: float = 15.0) -> int:
        """Events printed until the tool has been quiet for `quiet` seconds."""
        total, deadline = 0, time.monotonic() + within
        while time.monotonic() < deadline:
            time.sleep(quiet)
            n = self.new_events()
            total += n
            if n == 0:
                break
        return total


class Reference:
    """Every TCP state change the kernel makes (only TCP changes state here)."""

    def __init__(self) -> None:
        from bcc import BPF  # the bench runs as root with the project's venv

        self.bpf = BPF(text=REFERENCE.encode())

    def count(self) -> int:
        return sum(self.bpf[b"changes"][0])

    def close(self) -> None:
        self.bpf.cleanup()


def paced(churn: Path, addr: str, rate: int) -> tuple[float, float]:
    """One step: (attempts refused, attempts/s reached)."""
    r = subprocess.run([str(churn), "refused", addr, str(CLOSED_PORT), str(SECONDS), str(rate),
                        str(CLIENTS)], capture_output=True, text=True, check=True)
    attempts, reached = (float(x) for x in r.stdout.split())
    return attempts, reached


def ceiling(churn: Path, addr: str) -> list[dict]:
    """The same steps with no tool: what the clients reach on their own (a
    tool can be lossless beyond this, but no step can show it)."""
    steps = []
    for rate in RATES:
        attempts, reached = paced(churn, addr, rate)
        steps.append({"offered_s": rate, "reached_s": reached, "attempts": attempts})
    return steps


def search(cmd: list[str], log: Path, is_event: Callable[[str], bool], churn: Path,
           addr: str, port: int, alone: list[dict] | None = None) -> dict:
    """Step the offered rate up under one tool; every step's figures. (port:
    a churn server, whose connections show when the tool has attached.)"""
    out = open(log, "w")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # bcc tools print through Python
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
    output = Output(log, is_event)
    steps: list[dict] = []
    best = 0.0
    try:
        time.sleep(1.0)
        # Attached once a connection's events show up.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            subprocess.run([str(churn), "client", addr, str(port), "1", "10"], capture_output=True)
            if output.settle(quiet=0.3):
                break
        if proc.poll() is not None:
            return {"error": log.read_text()[-300:].strip(), "steps": [], "events_per_s": 0.0}
        reference = Reference()
        try:
            for rate in RATES:
                before = reference.count()
                attempts, reached = paced(churn, addr, rate)
                printed = output.settle()
                expected = reference.count() - before
                complete = expected > 0 and printed >= expected
                # The pace to keep: the offered rate, or what the clients reach
                # at this step with no tool at all, when that is less.
                pace = min([rate] + [a["reached_s"] for a in alone or [] if a["offered_s"] == rate])
                kept = reached >= KEPT_PACE * pace
                steps.append({"offered_s": rate, "reached_s": reached,
                              "attempts": attempts, "events": printed, "expected": expected,
                              "complete": complete, "kept_pace": kept})
                if not (complete and kept):
                    break
                best = expected / attempts * reached
        finally:
            reference.close()
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.close()
    return {"error": "", "steps": steps, "events_per_s": best}
