"""`pyprobe trace` across the lab's nat topology (pyprobe/lab/topology.py):
h1 (inside) <-> router rt <-> h2 (outside). A ping from h1 to h2 is
masqueraded by rt; a TCP request from h2 to rt:8080 is forwarded to h1:80
(DNAT) and its replies mapped back. The packet keeps its sk_buff across the
rewrite, and the part of its identity NAT leaves (IP ID, TCP sequence, ICMP
id and sequence), so each is one traced packet whose hops run through rt's
two devices in order, the rewrite marked where rt queued it; exactly as
many packets are traced as the hosts' devices sent (their own counters)."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from pyprobe.lab import topology, traffic
from pyprobe.netns import devices
from pyprobe.netns.namespaces import NETNS_RUN_DIR
from pyprobe.views import trace as view
from tests.kernel.test_trace import traced

pytestmark = [pytest.mark.root, pytest.mark.kernel]
N = 5
H1, RT, H2 = (topology.ns_name(n) for n in ("h1", "rt", "h2"))
INWARD = [(H2, "eth0", "queue"), (RT, "wan", "receive"), (RT, "lan", "queue"),
          (H1, "eth0", "receive")]  # fmt: skip
OUTWARD = [(H1, "eth0", "queue"), (RT, "lan", "receive"), (RT, "wan", "queue"),
           (H2, "eth0", "receive")]  # fmt: skip


@pytest.fixture
def lab():
    # one lab per machine (another test's may be up or coming up): see test_trace
    if topology.active() is not None or list(NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*")):
        pytest.skip("a lab is up or coming up (another test's)")
    with topology.Lab("nat") as built:
        yield built


def rewritten(p) -> list[tuple[str, str, str]]:
    """Where the trace saw the packet's addresses or ports change (NAT)."""
    return [(h["netns_name"], h["device"], h["hook"]) for h in p.ordered if h["flags"] & view.F_NAT]


def hops(p) -> list[tuple[str, str, str]]:
    return [
        (h["netns_name"], h["device"], h["hook"])
        for h in p.ordered
        if h["hook"] in ("queue", "receive")
    ]


def sent() -> int:
    """Packets the two hosts' devices sent (rt forwards them, it sends none of its own)."""
    h1 = devices.link_stats(topology.ns_path("h1"))["eth0"]["tx_packets"]
    return h1 + devices.link_stats(topology.ns_path("h2"))["eth0"]["tx_packets"]


def ping(n: int) -> None:
    argv = ["ping", "-n", "-q", "-c", str(n), "-i", "0.2", "-W", "1", "10.231.6.2"]
    subprocess.run(["ip", "netns", "exec", H1, *argv], capture_output=True, timeout=30)


def test_a_masqueraded_ping_crosses_rt_lan_then_wan(env, lab):
    ping(1)  # ARP on both sides first
    expression = "icmp[icmptype] == icmp-echo and dst host 10.231.6.2"
    packets, stats, lost = traced(env, None, expression, lambda: ping(N))
    assert lost == 0 and len(packets) == N == stats["matches"]
    for p in packets:
        assert hops(p) == OUTWARD
        assert rewritten(p) == [(RT, "wan", "queue")]  # the masquerade, on the way out
        end = p.ordered[-1]
        assert (end["hook"], end["netns_name"]) == ("consume", H2)
        # what h2 received: rt's address, not h1's (the masquerade)
        assert p.headers().src == "10.231.5.1"  # as the filter first saw it, in h1


def test_a_forwarded_tcp_request_every_packet_sent_traced_once_through_rt(env, lab):
    srv = traffic.Server(topology.ns_path("h1"), "10.231.5.1", topology.NAT_INSIDE_PORT)
    counts: list[int] = []

    def request() -> None:
        counts.append(sent())
        done = traffic.churn(
            topology.ns_path("h2"), topology.NAT_ROUTER_WAN, topology.NAT_FORWARD_PORT, 1
        )
        assert done == 1
        time.sleep(0.2)
        counts.append(sent())

    try:
        # ARP on both sides first: the counts are then the connection's alone
        assert traffic.churn(topology.ns_path("h2"), topology.NAT_ROUTER_WAN, 8080, 1) == 1
        packets, _, lost = traced(env, None, "tcp and host 10.231.6.2", request)
    finally:
        srv.stop()
    assert lost == 0
    assert len(packets) == counts[1] - counts[0] >= 6  # handshake, request, reply, FINs
    inward = [p for p in packets if p.headers().src == "10.231.6.2"]
    outward = [p for p in packets if p.headers().src == "10.231.5.1"]
    assert len(inward) + len(outward) == len(packets) and inward and outward
    for p in inward:
        assert hops(p) == INWARD
        assert rewritten(p) == [(RT, "lan", "queue")]  # to h1:80 (the DNAT)
    for p in outward:
        assert hops(p) == OUTWARD
        assert rewritten(p) == [(RT, "wan", "queue")]  # back from rt:8080
    syn = packets[0]
    # filtered where it entered h2's device: before the DNAT, to rt:8080
    assert syn.headers().tcp_flags == "S"
    assert (syn.headers().dst, syn.headers().dport) == (topology.NAT_ROUTER_WAN, 8080)
    data = next(p for p in inward if "P" in p.headers().tcp_flags)
    read = [h for h in data.hops if h["hook"] == "copy"]
    assert read and read[0]["netns_name"] == H1 and read[0]["pid"] == os.getpid()
