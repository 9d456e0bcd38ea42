"""queues' rtt feature: every established socket's smoothed RTT and
congestion window, per namespace, equal to what `ss -ti` prints for them."""

from __future__ import annotations

import re
import time

import pytest

from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import snapshot
from pyprobe.netns.namespaces import named_netns
from pyprobe.probes.queues import rtt_metrics
from tests.kernel.test_probeset import sh
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]

K = 5


def family(metrics, name: str, netns: str) -> dict:
    (fam,) = [m for m in metrics if m.name == name]
    return {
        s.name.removeprefix(name): s.value
        for s in fam.samples
        if s.labels["netns"] == netns and s.labels.get("le") in (None, "+Inf")
    }


def test_rtt_and_cwnd_equal_what_ss_prints(env):
    with VethPair(prefix=f"rr{time.monotonic_ns() % 100000}", net=83) as pair:
        sink = traffic.Listener(pair.path(pair.b), pair.addr_b, 7900, read=False)
        conns = [
            traffic.send_bytes(pair.path(pair.a), pair.addr_b, 7900, 20000, close=False)
            for _ in range(K)
        ]
        try:
            time.sleep(0.3)  # every segment acknowledged: the sockets idle, their RTT still
            probe = registry.create("queues", env=env, features=["rtt"])
            snapshot.expire()  # (a pass of an earlier test, before this pair, is not ours)
            metrics = list(rtt_metrics(probe.stats(), named_netns()))
            ss = sh(pair.a, "ss -tinH state established")
            ns_a = str(pair.inode(pair.a))
        finally:
            for c in conns:
                c.close()
            sink.stop()
    rtts = [float(ms) / 1000 for ms in re.findall(r"\brtt:([\d.]+)/", ss)]
    cwnds = [int(n) for n in re.findall(r"\bcwnd:(\d+)", ss)]
    assert len(rtts) == len(cwnds) == K
    rtt = family(metrics, "pyprobe_tcp_rtt_seconds", ns_a)
    cwnd = family(metrics, "pyprobe_tcp_cwnd_segments", ns_a)
    assert rtt["_gcount"] == cwnd["_gcount"] == K
    assert rtt["_gsum"] == pytest.approx(sum(rtts), abs=1e-6 * K)  # ss: µs in ms, 3 decimals
    assert cwnd["_gsum"] == sum(cwnds)
