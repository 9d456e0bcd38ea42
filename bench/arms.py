"""The arms compared: pyprobe's exporter (its default; every probe with every
feature) and its
stream, the floor's empty programs, the bcc tools and bpftrace one-liners;
each started and stopped as a tool of its own (Arm), and the process helpers
around them (the programs loaded, a tool gone idle, its CPU time).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pyprobe.probes import default

from . import fine, lossless

PYPROBE = str(Path(sys.executable).with_name("pyprobe"))
PORT = 19981

FLOOR = "floor: empty programs on every probe's and feature's hooks (dispatch; bpf_stats in ns/run)"
ARMS: dict[str, list[str] | None] = {
    "none": None,
    # What `pyprobe export` runs with no --probe: every probe, the kernel's
    # own counters where they say it, hooks only for what they do not.
    "pyprobe exporter, default": [PYPROBE, "export", "--web.listen-address", f"127.0.0.1:{PORT}"],
    "pyprobe exporter, every probe and feature": [
        PYPROBE,
        "export",
        "--probe",
        "*.all",
        "--web.listen-address",
        f"127.0.0.1:{PORT}",
    ],
    "pyprobe tcpstates -j (stream)": [PYPROBE, *fine.STREAM],
    # Empty programs on the hooks of every probe and feature: what their
    # dispatch costs the workloads (the best "every probe and feature" could
    # do), and bpf_stats' accounting per run. (A module of this package:
    # found where `python -m bench` found it, the repo root.)
    FLOOR: [sys.executable, "-m", "bench.floor"],
    "tcpstates-bpfcc": ["tcpstates-bpfcc"],
    "tcplife-bpfcc": ["tcplife-bpfcc"],
    "tcpretrans-bpfcc": ["tcpretrans-bpfcc"],
    "softirqs-bpfcc": ["softirqs-bpfcc", "3600"],
    "bpftrace: count inet_sock_set_state": [
        "bpftrace",
        "-e",
        "tracepoint:sock:inet_sock_set_state { @[args->oldstate, args->newstate] = count(); }",
    ],
    "bpftrace: count net_dev_xmit+netif_receive_skb": [
        "bpftrace",
        "-e",
        "tracepoint:net:net_dev_xmit, tracepoint:net:netif_receive_skb { @[probe] = count(); }",
    ],
}
STREAMING = ("pyprobe tcpstates -j (stream)", "tcpstates-bpfcc")  # ordered: the report's rows


def sh(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, **kw)


def progs() -> dict[int, dict]:
    out = sh("bpftool", "prog", "show", "-j").stdout
    return {p["id"]: p for p in json.loads(out or "[]")}


def probe_of(prog: dict) -> str:
    """Which pyprobe probe a program belongs to, by the maps it uses (drops
    and tcpstates both have an on_raw_tp)."""
    maps = {
        m["id"]: m.get("name", "")
        for m in json.loads(sh("bpftool", "map", "show", "-j").stdout or "[]")
    }
    used = {maps.get(i, "") for i in prog.get("map_ids", [])} - {"map_errors", ""}
    best = max(default().manifests.values(), key=lambda m: len(used & {x.name for x in m.maps}))
    return best.name if used & {x.name for x in best.maps} else ""


def hook_floor(program: str) -> str:
    """The floor arm's program on the hook of a pyprobe program ("netdev:
    on_queue" -> "f_net_dev_queue"; see floor.names), or ""."""
    probe, _, function = program.partition(": ")
    manifest = default().manifests.get(probe)
    for hook in manifest.hooks if manifest else ():
        for point in hook.points:
            if point.function[:15] == function:
                return f"f_{point.target.rsplit(':', 1)[-1]}"[:15]
    return ""


def settle(within: float = 3.0) -> int:
    """Program count once it stops changing."""
    last, deadline = len(progs()), time.monotonic() + within
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = len(progs())
        if now == last:
            return now
        last = now
    return last


def cpu_seconds(pid: int) -> float:
    """User + system time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quiet(pid: int, window: float = 0.5, within: float = 10.0) -> float:
    """Wait until a tool that has attached is done starting up (its first
    collection, freeing the compiler's memory: up to a second of CPU), so the
    first workload after it does not share the CPUs with that. Idle means at
    most one clock tick of CPU in a window. Returns the seconds waited."""
    start = time.monotonic()
    tick = 1 / os.sysconf("SC_CLK_TCK")
    try:
        last = cpu_seconds(pid)
        while time.monotonic() - start < within:
            time.sleep(window)
            now = cpu_seconds(pid)
            if now - last <= tick:
                break
            last = now
    except (OSError, IndexError, ValueError):
        pass  # it exited: start() sees that
    return time.monotonic() - start


class Arm:
    def __init__(self, name: str, cmd: list[str] | None, log: Path) -> None:
        self.name, self.cmd, self.log = name, cmd, log
        self.proc: subprocess.Popen | None = None
        self.ids: set[int] = set()
        self.error = ""
        self.startup = 0.0
        self.settled = 0.0  # seconds from attached to idle
        self.labels: dict[int, str] = {}  # program id -> "probe: function"

    def start(self) -> bool:
        if self.cmd is None:
            return True
        if not shutil.which(self.cmd[0]):
            self.error = f"{self.cmd[0]} not installed"
            return False
        before = set(progs())
        start = time.monotonic()
        # Streams write to a file on tmpfs, like `> /dev/null` would, so their output is
        # counted. The tool holds its own copy of the descriptor: ours closes at once.
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.error = (
                    f"exited {self.proc.returncode}: " + self.log.read_text()[-300:].strip()
                )
                return False
            new = set(progs()) - before
            if new and len(set(progs()) - before) == len(new):
                time.sleep(0.5)
                if set(progs()) - before == new:
                    self.ids = new
                    self.startup = time.monotonic() - start
                    self.settled = quiet(self.proc.pid)
                    return True
            time.sleep(0.2)
        self.error = "did not attach within 90 s"
        self.stop()
        return False

    def stop(self) -> str:
        if self.proc is None:
            return ""
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        return tail(self.log)

    def run_stats(self) -> dict[int, tuple[str, int, int]]:
        now = progs()
        if not self.labels:
            for i in self.ids & now.keys():
                probe = probe_of(now[i]) if self.name.startswith("pyprobe") else ""
                self.labels[i] = f"{probe}: " * bool(probe) + now[i].get("name", "?")
        return {
            i: (self.labels.get(i, "?"), now[i].get("run_time_ns", 0), now[i].get("run_cnt", 0))
            for i in self.ids
            if i in now
        }


def is_event(name: str) -> Callable[[str], bool]:
    """Which of a streaming tool's output lines are events."""
    return lossless.pyprobe_event if name.startswith("pyprobe") else lossless.bcc_event


def tail(path: Path, size: int = 1 << 16) -> str:
    """The end of a log: a stream's log holds hundreds of MB of events."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace")
