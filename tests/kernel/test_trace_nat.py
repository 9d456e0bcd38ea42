"""`pyprobe trace` across the lab's nat topology (pyprobe/lab/topology.py):
h1 (inside) <-> router rt <-> h2 (outside). A ping from h1 to h2 is
masqueraded by rt; a TCP request from h2 to rt:8080 is forwarded to h1:80
(DNAT) and its replies mapped back. The packet keeps its sk_buff across the
rewrite, and the part of its identity NAT leaves (IP ID, TCP sequence, ICMP
id and sequence), so each is one traced packet whose hops run through rt's
two devices in order, the rewrite marked where rt queued it; exactly as
many packets are traced as the hosts' devices sent (their own counters)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from pyprobe import cli
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


def test_masqueraded_datagrams_each_traced_once_to_their_drop_in_h2(env, lab):
    """UDP to a port nobody has in h2: each datagram masqueraded by rt (its
    checksum rewritten with the address) and dropped NO_SOCKET in h2."""
    ping(1)
    sent = []

    def send() -> None:
        before = devices.link_stats(topology.ns_path("h1"))["eth0"]["tx_packets"]
        traffic.udp_blast(topology.ns_path("h1"), "10.231.6.2", 9999, N)
        time.sleep(0.2)
        sent.append(devices.link_stats(topology.ns_path("h1"))["eth0"]["tx_packets"] - before)

    packets, _, lost = traced(env, None, "udp and dst port 9999", send)
    assert lost == 0 and len(packets) == N == sent[0]
    for p in packets:
        assert hops(p) == OUTWARD
        assert rewritten(p) == [(RT, "wan", "queue")]
        end = p.ordered[-1]
        assert (end["hook"], end["drop_reason"], end["netns_name"]) == ("drop", "NO_SOCKET", H2)


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


def test_why_behind_the_dnat_names_the_inside_port_nobody_listens_on(capsys, lab):
    """No server on h1:80: h2's connects to rt:8080 are forwarded and reset
    by h1. The reset is traced from where its address is rt's again (rt's
    wan); the verdict names the listener that is missing, inside."""
    with pytest.raises(SystemExit) as e:
        cli.main(["why", "-j", "--netns", H2, "-n", "2", "--timeout", "1", "10.231.6.254:8080"])
        raise SystemExit(0)
    assert e.value.code == 0
    v = json.loads(capsys.readouterr().out)
    assert [a["outcome"] for a in v["attempts"]] == ["refused", "refused"]
    assert v["causes"] == [
        f"connect refused: no listener on 10.231.5.1:80 in {H1}: 2 SYNs dropped NO_SOCKET "
        "(drops), 2 resets sent (tcpretrans) (2 of 2 attempts)"
    ]
    syns = [p for p in v["packets"] if p["summary"].startswith("10.231.6.2:")]
    assert len(syns) == 2
    for p in syns:  # each SYN through rt to h1, where no socket took it
        assert [h["netns_name"] for h in p["hops"] if h["hook"] == "queue"] == [H2, RT]
        assert (p["end"], p["hops"][-1]["netns_name"]) == ("dropped", H1)
