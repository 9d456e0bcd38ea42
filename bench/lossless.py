"""The highest event rate a streaming tool keeps up with, losing nothing.

The offered load steps up: TCP state changes paced to a fixed rate from two
client processes, each taking a socket of its own through listen() and back
down (connect(AF_UNSPEC) on a listener, tcp_disconnect(): CLOSE -> LISTEN ->
CLOSE, two state changes an attempt, no packets). This measures the streaming
path (program, ring, reader, output), so the source has to make state changes
faster than any tool consumes them: listen toggles reach ~230-400k attempts/s
(460-800k events/s) here, where refused connection attempts (SYN, RST) topped
out near 200k events/s and whole connections near 130k, both below what
pyprobe keeps up with. Each event is a real state change of a real socket,
the same record and path through both tools as any other. At each step the
tool's printed events are counted against the kernel's own count of state
changes (a counting program on the same tracepoint, loaded here). A step
passes when every event was printed and the clients kept to their schedule,
or to what they reach with no tool when that is less: a tool whose probes
slow the workload down "keeps up" only by slowing it, which is not a
sustained rate. The search stops at the first step that fails.
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
RATES = (
    5000,
    10000,
    20000,
    30000,
    40000,
    60000,
    80000,
    100000,
    120000,
    150000,
    200000,
    250000,
    300000,
)  # attempts/s, 2 state changes each
LISTEN_PORT = 18300  # client i listens on LISTEN_PORT + i
SECONDS = 2.0
CLIENTS = 2
KEPT_PACE = 0.95  # the clients reached at least this share of the offered rate


def pyprobe_event(line: str) -> bool:
    return line.startswith("{")


def bcc_event(line: str) -> bool:
    return re.match(r"^[0-9a-f]{6,}\s", line) is not None


class Output:
    """Complete lines a tool has written to its log since the last count.
    The tool appends (O_APPEND), so once counted, with the tool quiet, the log
    is emptied: a step at 300k attempts/s prints ~200 MB."""

    def __init__(self, path: Path, is_event: Callable[[str], bool]) -> None:
        self.path, self.is_event = path, is_event
        self.offset, self.rest = 0, b""

    def new_events(self) -> int:
        n = 0
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            for line in f:  # a line at a time: never the whole step in memory
                if not line.endswith(b"\n"):
                    self.rest += line
                    break
                if self.is_event((self.rest + line).decode(errors="replace")):
                    n += 1
                self.rest = b""
            self.offset = f.tell()
        return n

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

    def empty(self) -> None:
        """Drop what has been counted (call while the tool is quiet)."""
        if not self.rest:
            os.truncate(self.path, 0)
            self.offset = 0


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
    """One step: (attempts made, attempts/s reached)."""
    r = subprocess.run(
        [str(churn), "listen", addr, str(LISTEN_PORT), str(SECONDS), str(rate), str(CLIENTS)],
        capture_output=True,
        text=True,
        check=True,
    )
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


def search(
    cmd: list[str],
    log: Path,
    is_event: Callable[[str], bool],
    churn: Path,
    addr: str,
    port: int,
    alone: list[dict] | None = None,
) -> dict:
    """Step the offered rate up under one tool; every step's figures. (port:
    a churn server, whose connections show when the tool has attached.)"""
    log.write_bytes(b"")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # bcc tools print through Python
    # O_APPEND: Output.empty() can cut the log under the tool. The tool holds
    # its own copy of the descriptor: ours closes at once.
    with open(log, "a") as out:
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
                output.empty()
                complete = expected > 0 and printed >= expected
                # The pace to keep: the offered rate, or what the clients reach
                # at this step with no tool at all, when that is less.
                pace = min([rate] + [a["reached_s"] for a in alone or [] if a["offered_s"] == rate])
                kept = reached >= KEPT_PACE * pace
                steps.append(
                    {
                        "offered_s": rate,
                        "reached_s": reached,
                        "attempts": attempts,
                        "events": printed,
                        "expected": expected,
                        "complete": complete,
                        "kept_pace": kept,
                    }
                )
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
