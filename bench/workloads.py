"""The workloads every arm runs: connection churn (loopback and veth), small
UDP packets and iperf3, a client per CPU pinned there (Workloads), and the
reading of iperf3's output.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from pyprobe.lab.pair import VethPair

from . import fine

CHURN = Path(tempfile.gettempdir()) / "pyprobe-bench-churn"
CHURN_LO, CHURN_VETH = "churn, loopback (conn/s)", "churn, veth (conn/s)"
UDP, IPERF = "small UDP, veth (pkt/s)", "iperf3, veth (Gbit/s)"
WORKLOADS = (CHURN_LO, CHURN_VETH, UDP, IPERF)
FINE_GUARD = fine.GUARD  # s: churn not counted at the start of each interval (toggles then)
IPERF_PORT = 18082  # + the CPU's number


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

    def __init__(self, pair: VethPair, seconds: float) -> None:
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
