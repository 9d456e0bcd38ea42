"""`make bench`: pyprobe side by side with the bcc tools and bpftrace.

Arms alternate within each repetition (A/B/A/B...), every arm runs every
workload, and each figure is the median of the repetitions with its spread.
Writes bench/results.json and bench/RESULTS.md (date and machine included).

    .venv/bin/python bench/run.py [--reps 3] [--seconds 2] [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import fine  # noqa: E402
import lossless  # noqa: E402
from scrape import WARMUP as scrape_warmup  # noqa: E402
from scrape import measure as scrape_measure  # noqa: E402
from scrape import startup as scrape_startup  # noqa: E402

from pyprobe import lab, registry  # noqa: E402

PYPROBE = str(Path(sys.executable).with_name("pyprobe"))
CHURN = Path(tempfile.gettempdir()) / "pyprobe-bench-churn"
STATS = Path("/proc/sys/kernel/bpf_stats_enabled")
STATS_SECONDS = 0.5  # each workload of the ns/run pass (iperf3 left out)
PORT = 19981

FLOOR = "floor: empty programs on every probe's hooks (dispatch; bpf_stats in ns/run)"
ARMS: dict[str, list[str] | None] = {
    "none": None,
    "pyprobe exporter, core probes": [
        PYPROBE,
        "export",
        *(arg for name in fine.CORE for arg in ("--probe", name)),
        "--web.listen-address",
        f"127.0.0.1:{PORT}",
    ],
    "pyprobe exporter, every probe": [
        PYPROBE,
        "export",
        "--web.listen-address",
        f"127.0.0.1:{PORT}",
    ],
    "pyprobe tcpstates -j (stream)": [PYPROBE, *fine.STREAM],
    # Empty programs on the exporter's hooks: what their dispatch costs the workloads
    # (the best "every probe" could do), and bpf_stats' accounting per run.
    FLOOR: [sys.executable, str(HERE / "floor.py")],
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
CHURN_LO, CHURN_VETH = "churn, loopback (conn/s)", "churn, veth (conn/s)"
UDP, IPERF = "small UDP, veth (pkt/s)", "iperf3, veth (Gbit/s)"
WORKLOADS = (CHURN_LO, CHURN_VETH, UDP, IPERF)
# The fine A/B phase (fine.py): its arms, as the whole-tool arms they stand
# for.
FINE_ARMS = {
    "core": "pyprobe exporter, core probes",
    "every": "pyprobe exporter, every probe",
    "floor": FLOOR,
    "stream": "pyprobe tcpstates -j (stream)",
}
# Each workload's figures come from one run of it, interval by interval
# (fine.Intervals; the programs toggled as each ends), not from slices that
# were runs of their own: those carried each client's start (and iperf3's
# slow start), and 12 pairs of 0.5 s gave churn's pairs quartiles of ±2-4%;
# 32 pairs of 0.25 s intervals, ±0.5-1% (17 s a workload). Per workload: the
# interval's seconds, the pairs.
FINE_SLICES = {CHURN_LO: (0.25, 32), CHURN_VETH: (0.25, 32), IPERF: (0.25, 32)}
FINE_GUARD = fine.GUARD  # s: churn not counted at the start of each interval (toggles then)
IPERF_PORT = 18082  # + the CPU's number


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
    best = max(registry.manifests().values(), key=lambda m: len(used & {x.name for x in m.maps}))
    return best.name if used & {x.name for x in best.maps} else ""


def hook_floor(program: str) -> str:
    """The floor arm's program on the hook of a pyprobe program ("netdev:
    on_queue" -> "f_net_dev_queue"; see floor.names), or ""."""
    probe, _, function = program.partition(": ")
    manifest = registry.manifests().get(probe)
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


class Workloads:
    """Servers live for the whole benchmark; each workload runs `seconds`.

    Churn and small UDP keep every CPU busy: one client/server (sender/sink)
    pair pinned to each CPU, the figure their sum. A traced arm then pays its
    cost in CPU the workload no longer has, which is what the ratio should
    measure; one unpinned ping-pong client left the CPUs half idle (this VM's
    halts and wake-ups dominated; 6.9k conn/s where the pinned pairs reach
    ~23k, the rate the issue's peer figures were taken at), and a tool that
    burned the idle CPU came out above 1.

    iperf3 likewise: a client and its server pinned together on each CPU.
    One unpinned stream was reordered: ACKs processed on the other CPU sent
    data from there, so the flow entered two CPUs' backlogs, and the sender
    counted thousands of spurious fast retransmits a second (SACK reordering,
    DSACKs; the veth dropped nothing) and moved by ±10% from one half second
    to the next. Pinned: no retransmits, ±1-2%, and both CPUs busy."""

    def __init__(self, pair: lab.VethPair, seconds: float) -> None:
        self.pair, self.seconds = pair, seconds
        a, b = pair.a, pair.b
        self.cpus = sorted(os.sched_getaffinity(0))
        pin = lambda cpu, *cmd: ["taskset", "-c", str(cpu), *cmd]  # noqa: E731
        inb = ["ip", "netns", "exec", b]
        self.servers = [
            # unpinned: the lossless search's paced clients share it
            subprocess.Popen([str(CHURN), "server", "127.0.0.1", "18080"]),
        ]
        for i, cpu in enumerate(self.cpus):
            self.servers += [
                subprocess.Popen(pin(cpu, str(CHURN), "server", "127.0.0.1", str(18100 + i))),
                subprocess.Popen(
                    [*inb, *pin(cpu, str(CHURN), "server", pair.addr_b, str(18100 + i))]
                ),
                subprocess.Popen(
                    [*inb, *pin(cpu, str(CHURN), "udpsink", pair.addr_b, str(18200 + i))]
                ),
                subprocess.Popen(
                    [*inb, *pin(cpu, "iperf3", "-s", "-p", str(IPERF_PORT + i))],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            ]
        self.a = a
        time.sleep(0.5)

    def _clients(self, make: Callable[[int, int], list[str]], **kw) -> list[subprocess.Popen]:
        """Start one client per CPU at once (pinned there, to its own server),
        its output piped."""
        return [
            subprocess.Popen(
                ["taskset", "-c", str(cpu), *make(i, cpu)], stdout=subprocess.PIPE, text=True, **kw
            )
            for i, cpu in enumerate(self.cpus)
        ]

    def _per_cpu(
        self, make: Callable[[int, int], list[str]], parse: Callable[[str], float] = float
    ) -> float:
        """Run one client per CPU at once: the sum of what they print."""
        return sum(parse(p.communicate()[0]) for p in self._clients(make))

    def one(self, workload: str, seconds: float | None = None) -> float:
        """One workload's figure (a key of WORKLOADS)."""
        s = str(seconds or self.seconds)
        ina = ["ip", "netns", "exec", self.a]
        if workload == CHURN_LO:
            return self._per_cpu(
                lambda i, cpu: [str(CHURN), "client", "127.0.0.1", str(18100 + i), s]
            )
        # (taskset before `ip netns exec`: the client inherits the pinning)
        if workload == CHURN_VETH:
            return self._per_cpu(
                lambda i, cpu: [*ina, str(CHURN), "client", self.pair.addr_b, str(18100 + i), s]
            )
        if workload == UDP:
            return self._per_cpu(
                lambda i, cpu: [*ina, str(CHURN), "udp", self.pair.addr_b, str(18200 + i), s, "64"]
            )
        return self._per_cpu(lambda i, cpu: self._iperf(i, "-t", s, "-J"), parse=iperf_gbits)

    def _iperf(self, i: int, *args: str) -> list[str]:
        """The iperf3 client of CPU number i, to its server."""
        return [
            *("ip", "netns", "exec", self.a, "iperf3", "-c", self.pair.addr_b),
            *("-p", str(IPERF_PORT + i), *args),
        ]

    def intervals(self, workload: str, count: int, interval: float) -> Iterator[float]:
        """One run of a workload (a client per CPU, as in `one`) for `count`
        intervals: its figure over each, summed over the clients, as each
        ends. NaN for what a client did not report.

        Churn: `churn ticks`, the clients told one start on the monotonic
        clock, so their intervals are the same ones, each less its first
        FINE_GUARD seconds (fine.py toggles the programs then). iperf3 prints
        each interval (--forceflush), all of it; its clients run one interval
        more, as iperf3 may cut its last one short."""
        parse: Callable[[Iterable[str]], Iterator[float]]
        if workload == IPERF:
            seconds = str(math.ceil((count + 1) * interval))  # (-t takes whole seconds)
            cmds = [
                self._iperf(i, "-t", seconds, "-i", f"{interval:g}", "--forceflush", "-f", "m")
                for i, _ in enumerate(self.cpus)
            ]
            parse, scale = iperf_rates, 1e-3  # Mbit/s to Gbit/s
        elif workload in (CHURN_LO, CHURN_VETH):
            start = time.monotonic() + 0.3  # (`ip netns exec` takes ~10 ms to start one)
            where = ["ip", "netns", "exec", self.a] if workload == CHURN_VETH else []
            addr = self.pair.addr_b if workload == CHURN_VETH else "127.0.0.1"
            when = (f"{start:.6f}", f"{interval:g}", f"{FINE_GUARD:g}", str(count))
            cmds = [
                [*where, str(CHURN), "ticks", addr, str(18100 + i), *when]
                for i, _ in enumerate(self.cpus)
            ]
            parse, scale = (lambda lines: (float(x) for x in lines)), 1.0
        else:
            raise ValueError(f"{workload}: not measured by intervals")
        procs = self._clients(lambda i, cpu: cmds[i], stderr=subprocess.DEVNULL)
        try:
            rates = [parse(p.stdout) for p in procs if p.stdout]
            for _ in range(count):
                yield sum(next(r, float("nan")) for r in rates) * scale
        finally:
            for p in procs:
                p.kill()
                p.wait()

    def run(self, seconds: float | None = None, iperf: bool = True) -> dict[str, float]:
        return {w: self.one(w, seconds) for w in WORKLOADS if iperf or w != IPERF}

    def close(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()


IPERF_LINE = re.compile(
    r"^\[\s*\d+\]\s+[\d.]+-[\d.]+\s+sec\s.*?([\d.]+) Mbits/sec(?!.*(?:sender|receiver))"
)


def iperf_gbits(out: str) -> float:
    """Gbit/s received, from iperf3's JSON (-J); NaN when it gave none."""
    try:
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    except (ValueError, KeyError):
        return float("nan")


def iperf_rates(lines: Iterable[str]) -> Iterator[float]:
    """Mbit/s of each interval line of iperf3's text output (-f m), in order;
    the summary lines (sender, receiver) are left out."""
    for line in lines:
        m = IPERF_LINE.match(line)
        if m:
            yield float(m.group(1))


def fine_slices(work: Workloads, quick: bool) -> dict[str, fine.Intervals]:
    """fine.measure's workloads: each one's run by intervals, and the pairs."""

    def intervals_of(workload: str, seconds: float) -> Callable[[int], Iterator[float]]:
        return lambda count: work.intervals(workload, count, seconds)

    return {
        w: fine.Intervals(intervals_of(w, t), 2 if quick else n, t)
        for w, (t, n) in FINE_SLICES.items()
    }


def order(rep: int) -> list[str]:
    """The arms of one repetition: `none` first and last, the others forward in
    even repetitions and backward in odd ones, so a drift of the machine over
    a repetition (this VM's throughput wanders by several %) is not always
    charged to the same arms."""
    arms = [name for name in ARMS if name != "none"]
    return ["none", *(arms if rep % 2 == 0 else arms[::-1]), "none"]


def is_event(name: str) -> Callable[[str], bool]:
    """Which of a streaming tool's output lines are events."""
    return lossless.pyprobe_event if name.startswith("pyprobe") else lossless.bcc_event


def tail(path: Path, size: int = 1 << 16) -> str:
    """The end of a log: a stream's log holds hundreds of MB of events."""
    with open(path, "rb") as f:
        f.seek(max(0, f.seek(0, os.SEEK_END) - size))
        return f.read().decode(errors="replace")


def stream_events(name: str, log: Path, text: str, seconds: float) -> dict[str, float | None]:
    with open(log, errors="replace") as f:
        events = sum(1 for line in f if is_event(name)(line))
    if name.startswith("pyprobe"):
        m = re.search(r"lost events: (\d+)", text)
        lost = int(m.group(1)) if m else None  # no summary: it did not exit cleanly
    else:
        lost = sum(int(n) for n in re.findall(r"[Ll]ost (\d+) samples", text))
    return {"events_per_s": events / seconds, "lost": lost}


def unbeaten(res: dict) -> str:
    """ "≥ " when a tool passed every step of the lossless search: its rate is
    the source's limit in that run, not the tool's."""
    steps = res.get("steps", [])
    passed = len(steps) == len(lossless.RATES) and all(
        st["complete"] and st["kept_pace"] for st in steps
    )
    return "≥ " if passed else ""


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
    args = ap.parse_args()
    if args.report:
        (HERE / "RESULTS.md").write_text(markdown(json.loads((HERE / "results.json").read_text())))
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
    results: dict[str, dict] = {
        name: {"workloads": {}, "programs": {}, "stream": [], "error": ""} for name in ARMS
    }
    # Streams print into files there, counted afterwards. On tmpfs a write is a
    # copy into memory, close to the issue's `> /dev/null` (the writer's CPU is
    # the same as on ext4 here, 0.51 s for 3 s at 300k lines/s), and no
    # flusher thread writes a run's hundreds of MB back to disk ~30 s later,
    # in the middle of some other arm's measurement.
    shm = Path("/dev/shm")
    logs = Path(tempfile.mkdtemp(prefix="pyprobe-bench-", dir=shm if shm.is_dir() else None))
    found: dict[str, dict] = {}
    ceiling: list[dict] = []
    fine_ab: dict[str, dict] = {}
    try:
        with lab.VethPair(prefix="ppbench", net=95) as pair:
            work = Workloads(pair, args.seconds)
            try:
                for rep in range(args.reps):
                    for name in order(rep):
                        cmd = ARMS[name]
                        arm = Arm(
                            name,
                            cmd,
                            logs / f"{rep}-{re.sub(r'[^a-z0-9]+', '-', name.lower())}.log",
                        )
                        at = f"[{time.monotonic() - started:5.0f}s]"
                        print(
                            f"{at} rep {rep + 1}/{args.reps}: {name}", file=sys.stderr, flush=True
                        )
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
                        STATS.write_text("1")
                        before = arm.run_stats()
                        t1 = time.monotonic()
                        if cmd is not None:
                            work.run(STATS_SECONDS, iperf=False)
                        elapsed = time.monotonic() - t1
                        after = arm.run_stats()
                        STATS.write_text("0")
                        whole = time.monotonic() - t0
                        text = arm.stop()
                        for k, v in figures.items():
                            results[name]["workloads"].setdefault(k, []).append(v)
                        # Programs of one arm with the same name (e.g. on_raw_tp in two
                        # probes) are added up: total time / total runs.
                        per_name: dict[str, list[int]] = {}
                        for pid, (prog, ns1, n1) in after.items():
                            _, ns0, n0 = before.get(pid, (prog, 0, 0))
                            acc = per_name.setdefault(prog, [0, 0])
                            acc[0] += ns1 - ns0
                            acc[1] += n1 - n0
                        for prog, (ns, runs) in per_name.items():
                            if runs:
                                results[name]["programs"].setdefault(prog, []).append(
                                    (ns / runs, runs / elapsed)
                                )
                        if name in STREAMING:
                            results[name]["stream"].append(
                                stream_events(name, arm.log, text, whole)
                            )
                            arm.log.write_text(text)  # counted: keep its end, not 100s of MB
                        settle()
                for which in FINE_ARMS:
                    print(
                        f"[{time.monotonic() - started:5.0f}s] fine A/B: {FINE_ARMS[which]}",
                        file=sys.stderr,
                        flush=True,
                    )
                    slices = fine_slices(work, args.quick)
                    if which == "stream":  # (a stream of TCP state changes: iperf3 makes none)
                        slices.pop(IPERF)
                    fine_ab[which] = fine.measure(which, slices)
                    settle()
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
    print((HERE / "RESULTS.md").read_text())


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def slowest_toggle(fine_ab: dict) -> float:
    """The longest an attach or detach took in the fine phase (ms), 0 if unknown."""
    return max(
        (
            w.get("toggle_ms", 0.0)
            for res in fine_ab.values()
            for w in res.values()
            if "error" not in res
        ),
        default=0.0,
    )


def fine_section(r: dict) -> list[str]:
    """The fine A/B table (fine.py), when the run had that phase."""
    fine_ab, slices = r.get("fine") or {}, r.get("fine_slices") or {}
    intervals = r.get("fine_intervals") or []
    if not fine_ab:
        return []
    workloads = list(slices)
    lines = [
        "## Throughput, fine A/B: the same programs attached and detached between intervals",
        "",
        "Each arm's programs are loaded once (the exporter's probes, built as `pyprobe export`",
        "builds them, or the floor arm's empty ones); only their attachment changes, as each",
        "interval of one run of a workload ends, in pairs (off then on, on then off). Figure:",
        "the median of the pairs' on/off ratios [quartiles]. "
        + ("Intervals: " if intervals else "Slices (each a run of its own): ")
        + "; ".join(f"{w} {t:g} s × {2 * n}" for w, (t, n) in slices.items())
        + ". "
        + (
            f"Churn leaves the first {FINE_GUARD * 1e3:.0f} ms of each interval uncounted, "
            "where the toggle happens; iperf3 counts all of it. An interval whose toggle "
            "was not done by then (the slowest took "
            f"{toggle:.0f} ms), or was read late after one, is left out with its pair "
            "(pairs counted, where fewer than planned: in parentheses). "
            if intervals and (toggle := slowest_toggle(fine_ab))
            else ""
        )
        + "The whole-tool exporter arms above also carry the daemon's own process; the "
        "stream's is the command itself (`pyprobe tcpstates -j` to /dev/null, in the "
        "helper's process), its consumer included.",
        "",
        "| arm | " + " | ".join(workloads) + " |",
        "|---|" + "---|" * len(workloads),
    ]
    for arm, res in fine_ab.items():
        if "error" in res:
            lines.append(f"| {FINE_ARMS.get(arm, arm)} | fails here: {res['error']['why'][:80]} |")
            continue
        cells = [
            f"{res[w]['ratio']:.3f} [{res[w]['q1']:.3f}–{res[w]['q3']:.3f}]"
            + (f" ({res[w]['pairs']} of {n})" if res[w]["pairs"] < n else "")
            if "ratio" in res.get(w, {})
            else "-"
            for w, (_, n) in slices.items()
        ]
        lines.append(f"| {FINE_ARMS.get(arm, arm)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(r: dict) -> str:
    arms = r["arms"]
    base = arms["none"]["workloads"]
    workloads = list(base)
    m = r["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"{r['date']} · {m['host']} · kernel {m['kernel']} · {m['cpus']} × {m['cpu']} · "
        f"{r['reps']} repetitions × {r['seconds']:g} s per workload, arms alternating · "
        f"whole run {r['duration_s'] / 60:.1f} min. Produced by `make bench` (bench/run.py).",
        "",
        "## Throughput, as a ratio to no tracing (median, [min–max] over repetitions)",
        "",
        "| arm | " + " | ".join(workloads) + " |",
        "|---|" + "---|" * len(workloads),
    ]
    for name, res in arms.items():
        if res["error"]:
            lines.append(
                f"| {name} | "
                + " | ".join(["fails here: " + res["error"][:60]] + [""] * (len(workloads) - 1))
                + " |"
            )
            continue
        cells = []
        for w in workloads:
            vals, b = res["workloads"].get(w, []), med(base.get(w, []))
            if name == "none":
                cells.append(f"{med(vals):,.2f}" if "Gbit" in w else f"{med(vals):,.0f}")
            else:
                ratios = [v / b for v in vals] if b else []
                cells.append(
                    f"{med(ratios):.2f} [{min(ratios):.2f}–{max(ratios):.2f}]" if ratios else "-"
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(The `none` row is absolute: connections/s, packets/s, Gbit/s.)",
        "",
        *fine_section(r),
        "## BPF programs: ns per run and runs per second (kernel.bpf_stats_enabled)",
        "",
        "| arm | program | ns/run | runs/s |",
        "|---|---|---|---|",
    ]
    for name, res in arms.items():
        for prog, samples in sorted(res["programs"].items()):
            lines.append(
                f"| {name} | {prog} | {med([s[0] for s in samples]):.0f} | "
                f"{med([s[1] for s in samples]):,.0f} |"
            )
    lines += [
        "",
        "## Streaming: events captured per second and lost (during all workloads)",
        "",
        "| tool | events/s | lost |",
        "|---|---|---|",
    ]
    for name in STREAMING:
        for s in arms[name]["stream"]:
            lost = "unknown: no exit summary" if s["lost"] is None else s["lost"]
            lines.append(f"| {name} | {s['events_per_s']:,.0f} | {lost} |")
    lines += [
        "",
        "## Streaming: the highest rate kept up with, losing nothing",
        "",
        f"Offered load steps up ({', '.join(f'{x // 1000}k' for x in lossless.RATES)} "
        f"attempts/s, each a socket's listen() and disconnect: 2 state changes, "
        f"LISTEN and CLOSE, no packets; "
        f"{lossless.CLIENTS} paced clients, {lossless.SECONDS:g} s a step); "
        "a step passes when every event was printed and the clients kept pace (95% of the "
        "offered rate, or of what they reach with no tool if less).",
        "",
        "| tool | highest lossless rate (events/s) "
        "| steps (offered → reached attempts/s: printed/expected) |",
        "|---|---|---|",
    ]
    for name, res in r.get("lossless", {}).items():
        steps = "; ".join(
            f"{st['offered_s'] // 1000}k → {st['reached_s'] / 1000:.1f}k: "
            f"{st['events']:,}/{st['expected']:,.0f}"
            + ("" if st["complete"] and st["kept_pace"] else " ✗")
            for st in res["steps"]
        )
        lines.append(
            f"| {name} | {unbeaten(res)}{res['events_per_s']:,.0f} | {res['error'][:80] or steps} |"
        )
    if r.get("lossless_ceiling"):
        reach = "; ".join(
            f"{st['offered_s'] // 1000}k → {st['reached_s'] / 1000:.1f}k"
            for st in r["lossless_ceiling"]
        )
        lines += [
            "",
            f"The clients alone, no tool (offered → reached attempts/s): {reach}. Past the "
            "rate they reach alone no step can pass, whatever the tool.",
        ]
    lines += [
        "",
        "## The exporter: scrape time, series, memory, start-up",
        "",
        "| live sockets | scrape p50 | scrape p99 (the slowest) | of those, waited for a socket "
        "pass | first scrapes (pace not yet known) | series | RSS | start to first data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, s in r["scrape"].items():
        first = f"{s['unanticipated_ms']:.1f} ms" if "unanticipated_ms" in s else "–"
        measured = len(s.get("each_ms", [])) - scrape_warmup
        waited = f"{s['waited_for_pass']} of {measured}" if "waited_for_pass" in s else "–"
        lines.append(
            f"| {int(n):,} | {s['p50_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {waited} | "
            f"{first} | {s['series']} | {s['rss_mb']:.0f} MB | {s['startup_s']:.1f} s |"
        )
    if r.get("startup"):
        st = r["startup"]
        each = lambda k: " / ".join(f"{x:.2f}" for x in st.get(k, ()))  # noqa: E731
        every = lambda k: f" (every probe attached: {each(k)} s)" if st.get(k) else ""  # noqa: E731
        installed = (
            f"the first start after an install (`pyprobe compile`, run by `make setup`, "
            f"compiled the programs for this kernel) {each('installed_s')} s"
            f"{every('installed_all_s')}; "
            if st.get("installed_s")
            else ""
        )
        cold = (
            f"compiling every program at start (the program cache off, or a kernel nothing "
            f"was compiled for) {each('cold_s')} s{every('cold_all_s')}; "
        )
        warm = (
            f"loading the programs an earlier start kept (a restart) {each('warm_s')} s"
            f"{every('warm_all_s')}."
        )
        lines += [
            "",
            "Start to first data with no socket load (exec to the first /metrics answer "
            "with a probe's series: the daemon serves from its first attached probe on "
            "while the rest load): " + installed + cold + warm + " The table's column is a "
            "start with the programs kept (the arms above ran the exporter before) to its "
            "first scrape with every probe attached, counting that many sockets.",
        ]
    lines += [
        "",
        "## Targets (issue 7), measured in this run",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for target, measured, ok in targets(r):
        lines.append(f"| {target} | {measured} | {'yes' if ok else '**no**'} |")
    lines += [
        "",
        "## Reading these numbers",
        "",
        "- Churn and small UDP run one client/server pair pinned to each CPU, so the CPUs",
        "  are busy and a tool's cost (in the kernel or in its own process) comes out of the",
        "  workload's throughput. (Until 2026-12-01 one unpinned ping-pong client left the",
        "  CPUs half idle: this VM's halts and wake-ups set its pace, at 6.9k conn/s, and an",
        "  arm that kept a CPU busy, such as a stream, came out *above* 1.) iperf3 is a",
        "  stream per CPU, its client and server pinned together there (until 2026-12-02 one",
        "  unpinned stream, reordered between the CPUs' backlogs: thousands of spurious",
        "  retransmits a second, ±10% from one half second to the next). This is a 2-vCPU",
        "  Firecracker VM: whole-tool ratios still move by ±0.05 between repetitions (see",
        "  the spreads and the floor arm); the fine A/B phase is what resolves a few %.",
        '- The issue\'s "iperf3 ≥ 0.99" is judged for the core probes, whose churn target it',
        "  follows: every probe puts programs on each packet's path, where empty ones (the",
        "  floor arm) cost more than 1% already; every probe's and the floor's iperf3 ratios",
        "  are shown beside it.",
        "- An arm's workloads start once its tool has attached and gone idle (at most one",
        "  clock tick of CPU in half a second): start-up work after attaching (a first",
        "  collection, freeing a compiler's memory) does not land on the first workload.",
        "- `none` is measured at the start and the end of every repetition; the other arms",
        "  run forward in one repetition and backward in the next. Ratios use the median",
        "  of all `none` runs. The floor arm (empty programs) shows how far apart two",
        "  nearly equal arms can land on this VM.",
        "- Throughput is measured with kernel.bpf_stats_enabled off, as the tools are deployed.",
        "  ns/run comes from a second, shorter pass of each arm (churn and small UDP, 0.5 s each)",
        "  with it on; it times each run with two clock reads, which with the raw tracepoint's",
        "  dispatch cost what the `floor` arm shows (empty programs on the same hooks).",
        "  Targets are judged net of it. runs/s are of that pass.",
        "- Scrapes are measured against the real exporter 1.05 s apart, as Prometheus would",
        "  (cold caches each time), not back to back, and with its request headers: OpenMetrics",
        "  asked for first, gzip (until 2026-12-02 the plain text format, uncompressed; the",
        "  exporter writes both in ~1.5 ms). Once three requests have come at a",
        "  steady pace, the exporter counts sockets (sock_diag, ~1 µs a socket in the kernel)",
        "  just before the next is due, so p50/p99 are of scrapes served from a count at most",
        "  2 × its duration + 50 ms old; the first four (the daemon's own first collection",
        "  and three that set the pace), which count while the scraper waits, are reported",
        "  apart. With 30 measured, p99 is the slowest; the daemon's debug log says how",
        "  many still counted sockets while the scraper waited (the pace lost).",
        "- The lossless search counts every state change the kernel made during a step with",
        "  a counting program of its own and compares each tool's printed events with it.",
        "",
    ]
    return "\n".join(lines)


def targets(r: dict) -> list[tuple[str, str, bool]]:
    arms, base = r["arms"], r["arms"]["none"]["workloads"]

    def ratio(arm: str, w: str) -> float:
        vals, b = arms[arm]["workloads"].get(w, []), med(base.get(w, []))
        return med([v / b for v in vals]) if vals and b else float("nan")

    def ratios(xs: list[float]) -> str:
        """Three decimals: at two, 0.945 reads "0.95" beside a "no" for ≥ 0.95."""
        return " / ".join(f"{x:.3f}" for x in xs)

    def ns(arm: str) -> dict[str, float]:
        """ns/run of the arm's programs that ran at least 1,000 times a second:
        one that ran a handful of times (drops, on a drop or two) shows only
        its cold caches."""
        return {
            p: med([s[0] for s in v])
            for p, v in arms[arm]["programs"].items()
            if med([s[1] for s in v]) >= 1000
        }

    out = []
    core, every = "pyprobe exporter, core probes", "pyprobe exporter, every probe"
    # (named "floor: empty programs (…)" in results from before it took every hook)
    floor_arm = next((a for a in arms if a.startswith("floor:")), FLOOR)
    churn = [CHURN_LO, CHURN_VETH]
    fine_ab = r.get("fine") or {}

    def judged(arm: str, fine_arm: str, ws: list[str]) -> tuple[list[float], str]:
        """The fine A/B ratios where the run has them (what a target is judged
        by), with the whole-tool arm's beside them; else the whole tool's."""
        whole = [ratio(arm, w) for w in ws]
        res = fine_ab.get(fine_arm, {})
        if not all("ratio" in res.get(w, {}) for w in ws):
            return whole, ratios(whole)
        fine_r = [res[w]["ratio"] for w in ws]
        return fine_r, f"fine A/B {ratios(fine_r)} (whole tool: {ratios(whole)})"

    c, text = judged(core, "core", churn)
    out.append(("exporter, core probes: churn ≥ 0.98", text, min(c) >= 0.98))
    e, text = judged(every, "every", churn)
    _, floor_text = judged(floor_arm, "floor", churn)
    out.append(
        (
            "exporter, every probe: churn ≥ 0.95",
            text + "; its hooks with empty programs, the floor arm: " + floor_text,
            min(e) >= 0.95,
        )
    )
    # The issue's "iperf3 ≥ 0.99" follows the core probes' churn target, and
    # is read as theirs: every probe puts programs on each packet's path
    # (queueing, transmit, receive, NAPI, softirqs), where empty ones (the
    # floor arm) already cost more than 1%.
    i_core, text_core = judged(core, "core", [IPERF])
    _, text_every = judged(every, "every", [IPERF])
    _, floor_iperf = judged(floor_arm, "floor", [IPERF])
    out.append(
        (
            "exporter, core probes: iperf3 ≥ 0.99",
            f"{text_core}; beside it, every probe: {text_every}; the floor arm: {floor_iperf}",
            min(i_core) >= 0.99,
        )
    )
    # Counters only add to a per-CPU slot; the others keep state between
    # events (a softirq's start time, a socket's owner) or read more of it.
    stateful = {
        "softirqs: on_entry",
        "softirqs: on_exit",
        "tcpretrans: on_retransmit",
        "tcpretrans: on_reset_sent",
        "tcpretrans: on_reset_received",
        "drops: on_raw_tp",
    }
    floor_ns = ns(floor_arm)
    floor = med(list(floor_ns.values())) if floor_ns else 0.0
    every_ns = ns(every)
    # The kernel keeps 15 characters of a program's name (on_reset_receiv).
    stateful = {f"{probe}: {prog[:15]}" for probe, prog in (k.split(": ") for k in stateful)}
    counters = {k: v for k, v in every_ns.items() if k not in stateful}
    others = {k: v for k, v in every_ns.items() if k in stateful}

    def net(program: str, value: float) -> float:
        """ns/run less the floor arm's empty program on the same hook (dispatch
        costs differ by hook: 65-80 ns here), or their median."""
        return value - floor_ns.get(hook_floor(program), floor)

    for title, group, limit in (
        ("counter programs ≤ 40 ns/run", counters, 40),
        ("stateful programs ≤ 100 ns/run", others, 100),
    ):
        if group:
            nets = [net(k, v) for k, v in group.items()]
            out.append(
                (
                    f"{title} (as measured; net of the floor on the same hook)",
                    f"{min(group.values()):.0f}–{max(group.values()):.0f} ns; net "
                    f"{min(nets):.0f}–{max(nets):.0f} ns (floor {min(floor_ns.values()):.0f}–"
                    f"{max(floor_ns.values()):.0f} ns)",
                    max(nets) <= limit,
                )
            )
    # Each pyprobe program against every peer program on the same hook.
    peers = [
        (every, "tcpstates: on_raw_tp", "tcpstates-bpfcc", "tracepoint__sock__inet_sock_set_state"),
        (every, "tcpstates: on_raw_tp", "tcplife-bpfcc", "tracepoint__sock__inet_sock_set_state"),
        (every, "tcpstates: on_raw_tp", "bpftrace: count inet_sock_set_state", "inet_sock_set_s"),
        (
            "pyprobe tcpstates -j (stream)",
            "tcpstates: on_raw_tp",
            "tcpstates-bpfcc",
            "tracepoint__sock__inet_sock_set_state",
        ),
        (every, "softirqs: on_entry", "softirqs-bpfcc", "tracepoint__irq__softirq_entry"),
        (every, "softirqs: on_exit", "softirqs-bpfcc", "tracepoint__irq__softirq_exit"),
        (
            every,
            "netdev: on_xmit",
            "bpftrace: count net_dev_xmit+netif_receive_skb",
            "net_dev_xmit",
        ),
        (
            every,
            "netdev: on_receive",
            "bpftrace: count net_dev_xmit+netif_receive_skb",
            "netif_receive_s",
        ),
        (
            every,
            "tcpretrans: on_retransmit",
            "tcpretrans-bpfcc",
            "tracepoint__tcp__tcp_retransmit_skb",
        ),
    ]
    duels = []
    for arm, ours, peer_arm, theirs in peers:
        a, b = ns(arm).get(ours), ns(peer_arm).get(theirs)
        if a is not None and b is not None:
            duels.append((f"{ours} {a:.0f} vs {peer_arm} {b:.0f}", a < b))
    if duels:
        lost_duels = [d for d, won in duels if not won]
        out.append(
            (
                "every pyprobe program beats the peers on its hook (ns/run)",
                f"{len(duels) - len(lost_duels)} of {len(duels)}"
                + (f"; not: {'; '.join(lost_duels)}" if lost_duels else ""),
                not lost_duels,
            )
        )
    stream = "pyprobe tcpstates -j (stream)"
    s_ns = ns(stream).get("tcpstates: on_raw_tp", float("nan"))
    out.append(
        (
            "stateful (streaming) tcpstates ≤ 100 ns/run (net of the floor)",
            f"{s_ns:.0f} ns; net {s_ns - floor:.0f} ns",
            s_ns - floor <= 100,
        )
    )
    losses = [x["lost"] for x in arms[stream]["stream"]]
    known = None not in losses
    lost = sum(losses) if known else 0
    sr, text = judged(stream, "stream", churn)
    out.append(
        (
            "streaming tcpstates ≥ 0.85 × none (churn) with 0 lost (lost: the whole tool's)",
            text
            + ", "
            + (f"lost {lost:,}" if known else "lost unknown (a run had no exit summary)"),
            known and lost == 0 and min(sr) >= 0.85,
        )
    )
    rates = {k: v["events_per_s"] for k, v in r.get("lossless", {}).items()}
    if stream in rates and "tcpstates-bpfcc" in rates:
        ours, peer = rates[stream], rates["tcpstates-bpfcc"]
        at_least = unbeaten(r["lossless"][stream])
        out.append(
            (
                "streaming: lossless rate ≥ 5 × tcpstates-bpfcc's",
                f"{at_least}{ours:,.0f} vs {peer:,.0f} events/s "
                f"({at_least}{ours / peer if peer else float('inf'):.1f}×)",
                ours >= 5 * peer,
            )
        )
    sc = r["scrape"]
    p10, p100 = sc.get("10000", sc.get(10000)), sc.get("100000", sc.get(100000))
    if p10:
        out.append(
            ("scrape p99 ≤ 20 ms at 10k sockets", f"{p10['p99_ms']:.0f} ms", p10["p99_ms"] <= 20)
        )
    if p100:
        out.append(
            ("scrape p99 ≤ 50 ms at 100k sockets", f"{p100['p99_ms']:.0f} ms", p100["p99_ms"] <= 50)
        )
    if r.get("startup"):
        st = r["startup"]
        cold, warm = max(st["cold_s"]), max(st["warm_s"])
        every = lambda k: f" (every probe attached: {max(st[k]):.1f} s)" if st.get(k) else ""  # noqa: E731
        if st.get("installed_s"):
            first = max(st["installed_s"])
            out.append(
                (
                    "start to first data ≤ 3 s: first start after install (slowest)",
                    f"{first:.1f} s{every('installed_all_s')}",
                    first <= 3,
                )
            )
        out.append(
            (
                "start to first data ≤ 3 s: a start that compiles (cache off / new kernel; "
                "slowest)",
                f"{cold:.1f} s{every('cold_all_s')}",
                cold <= 3,
            )
        )
        out.append(
            (
                "start to first data ≤ 3 s: restart (programs kept; slowest)",
                f"{warm:.1f} s{every('warm_all_s')}",
                warm <= 3,
            )
        )
    else:
        starts = [s["startup_s"] for s in sc.values()]
        out.append(("start to first data ≤ 3 s", f"{max(starts):.1f} s", max(starts) <= 3))
    rss = [s["rss_mb"] for s in sc.values()]
    out.append(("daemon RSS ≤ 100 MB", f"{min(rss):.0f}–{max(rss):.0f} MB", max(rss) <= 100))
    return out


if __name__ == "__main__":
    main()
