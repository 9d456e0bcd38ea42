"""`pyprobe why` on each failure of `pyprobe lab scenario`: the lab built and
broken by the scenario's own functions (not its drive), then `why` aimed at
the scenario's destination from the namespace that suffers, every probe
attached beside the trace. Its first cause names what broke (stp-loop:
among two, beside the refusal of the port it probes), with the kernel's own
counts where it has them (nstat's counters, read in the namespace before
and after)."""

from __future__ import annotations

import json

import pytest

from pyprobe import cli
from pyprobe.lab import scenarios, topology
from pyprobe.netns.namespaces import NETNS_RUN_DIR
from tests.support import nstat_in

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def netstat(short: str) -> dict[str, int]:
    """A lab namespace's nstat counters."""
    return nstat_in(topology.ns_path(short))


@pytest.fixture
def scenario(request):
    """The scenario's lab, up and broken; down (and its servers stopped) after."""
    if topology.active() is not None or list(NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*")):
        pytest.skip("a lab is up or coming up (another test's)")
    s = scenarios.SCENARIOS[request.param]
    lab = topology.Lab(s.topology, stp=s.stp).up()
    try:
        s.breaks()
        yield s, lab
    finally:
        scenarios.cleanup()
        lab.down()


def why(capsys, short: str, target: str, *options: str) -> dict:
    with pytest.raises(SystemExit) as e:
        cli.main(["why", "-j", "--netns", topology.ns_name(short), *options, target])
        raise SystemExit(0)
    out = capsys.readouterr().out
    assert e.value.code == 0
    return json.loads(out)


H1, H2 = topology.ns_name("h1"), topology.ns_name("h2")


@pytest.mark.parametrize("scenario", ["neighbour"], indirect=True)
def test_neighbour_no_arp_reply(capsys, scenario):
    v = why(capsys, "h1", f"{scenarios.ABSENT}:80", "-n", "2", "--timeout", "3")
    assert [a["outcome"] for a in v["attempts"]] == ["unreachable"] * 2
    # each attempt's SYN waited for ARP, which failed: dropped, one each
    assert v["causes"][0] == (
        f"no ARP reply from {scenarios.ABSENT} on eth0 in {H1}: resolution failed (neigh), "
        "2 packets dropped NEIGH_FAILED (drops)"
    )
    assert len(v["causes"]) == 1, v["causes"]  # its ICMP host unreachable to h1 is that


@pytest.mark.parametrize("scenario", ["no-route"], indirect=True)
def test_no_route_lookups_and_ipoutnoroutes(capsys, scenario):
    before = netstat("h1")["IpOutNoRoutes"]
    v = why(capsys, "h1", f"{scenarios.H2}:8080", "-n", "3", "--timeout", "1")
    sent = netstat("h1")["IpOutNoRoutes"] - before
    assert [a["outcome"] for a in v["attempts"]] == ["unreachable"] * 3 and v["packets"] == []
    assert sent == 3
    assert v["causes"][0] == (
        f"no route to 10.231.1.0/24 in {H1} (table main): 3 lookups failed (routes), "
        f"IpOutNoRoutes +{sent}; connect failed at once, no packet sent (3 of 3 attempts)"
    )
    assert len(v["causes"]) == 1


@pytest.mark.parametrize("scenario", ["closed-port"], indirect=True)
def test_closed_port_refused_syns_and_resets(capsys, scenario):
    before = netstat("h2")["TcpOutRsts"]
    target = f"{scenarios.H2}:{scenarios.CLOSED_PORT}"
    v = why(capsys, "h1", target, "-n", "3", "--timeout", "1")
    resets = netstat("h2")["TcpOutRsts"] - before
    assert [a["outcome"] for a in v["attempts"]] == ["refused"] * 3 and resets == 3
    assert v["causes"][0] == (
        f"connect refused: no listener on {target} in {H2}: 3 SYNs dropped NO_SOCKET (drops), "
        f"{resets} resets sent (tcpretrans) (3 of 3 attempts)"
    )
    assert len(v["causes"]) == 1


@pytest.mark.parametrize("scenario", ["backlog"], indirect=True)
def test_backlog_accept_queue_full(capsys, scenario):
    """backlog 1 takes two connections (the queue is full past its limit),
    the next attempts' SYNs (and their retransmits) are turned away."""
    before = netstat("h2")["TcpExtListenOverflows"]
    target = f"{scenarios.H2}:{scenarios.BACKLOG_PORT}"
    v = why(capsys, "h1", target, "-n", "4", "--timeout", "1.5")
    overflows = netstat("h2")["TcpExtListenOverflows"] - before
    assert [a["outcome"] for a in v["attempts"]] == ["connected"] * 2 + ["timeout"] * 2
    assert overflows >= 2
    assert v["causes"][0] == (
        f"accept queue full on {target} in {H2} (accept queue 2/1): {overflows} listen "
        "overflows (queues: TcpExtListenOverflows): the application does not accept, or its "
        "backlog is too small; 2 of 4 attempts timed out"
    )
    assert v["causes"][1].startswith("reachable: 2 of 4 attempts connected")


@pytest.mark.parametrize("scenario", ["stp-loop"], indirect=True)
def test_stp_loop_blocked_port(capsys, scenario):
    """h1's first datagram to h2 needs ARP: its broadcast, flooded by br0 to
    the loop's forwarding end, arrives at the blocking end and is dropped."""
    v = why(capsys, "h1", "10.231.2.2:9", "-u", "-n", "1", "--timeout", "3")
    stp = [c for c in v["causes"] if c.startswith("STP blocks")]
    assert stp, v
    assert stp[0].startswith(f"STP blocks loopb on br0 in {topology.ns_name('sw')}: ")
    assert "BRIDGE_INGRESS_STP_STATE at loopb (drops)" in stp[0]
    # and the datagram itself: h2 has no listener on 9 (its ICMP port unreachable)
    refused = [c for c in v["causes"] if c.startswith("refused: no listener on 10.231.2.2:9 ")]
    assert refused, v["causes"]
    # nothing else: the lab's IPv6 chatter (dropped where IPv6 is off) is not this
    assert len(v["causes"]) == 2, v["causes"]


@pytest.mark.parametrize("scenario", ["enslaved-ip"], indirect=True)
def test_enslaved_ip_names_the_port(capsys, scenario):
    """sw sends from the address left on port1: its ARP goes out of port1
    alone, the answer arrives on br0, port1's entry fails."""
    v = why(capsys, "sw", "10.231.2.2:9", "-u", "-n", "1", "--timeout", "3")
    assert v["causes"][0].startswith(
        f"an address on port1, a port of br0 in {topology.ns_name('sw')}: ARP for 10.231.2.2"
    ), v["causes"]


@pytest.mark.parametrize("scenario", ["vxlan-mtu"], indirect=True)
def test_vxlan_mtu_black_hole(capsys, scenario):
    """h1 connects (small segments pass) and writes 64 KB: its full-size
    segments are answered by sw1's vxlan with ICMP fragmentation needed
    (the trace sees it), which h1's nftables drops (its rule counter) while
    TCP retransmits (nstat)."""
    from tests.kernel.test_scenarios_counted import nft_counters

    before = netstat("h1")["TcpRetransSegs"]
    target = f"{scenarios.VX_H2}:{scenarios.MTU_PORT}"
    v = why(capsys, "h1", target, "-n", "1", "--timeout", "1.5", "-s", "65536")
    (dropped,) = nft_counters("h1")
    retransmitted = netstat("h1")["TcpRetransSegs"] - before
    assert [a["outcome"] for a in v["attempts"]] == ["stalled"]
    assert dropped > 0 and retransmitted > 0
    assert v["causes"][0] == (
        f"MTU black hole from {H1} to {scenarios.VX_H2}: {dropped} ICMP errors from "
        f"{scenarios.VX_H2} dropped by netfilter on eth0 in {H1} (drops NETFILTER_DROP), "
        f"{retransmitted} segments to {target} retransmitted (tcpretrans): packets too big "
        "for the path vanish and the ICMP that would say so (fragmentation needed) never arrives "
        "(eth0's MTU 1500: what the sender still believes the path carries)"
    )
    # the ICMP itself, as the trace saw it leave the tunnel's switch
    sw1 = topology.ns_name("sw1")
    assert (
        f"ICMP fragmentation needed unreachable from {scenarios.VX_H2}, sent in netns {sw1} "
        "on port" in v["causes"]
    ), v["causes"]
    assert (
        f"dropped by netfilter (a firewall rule) in netns {H1} on eth0: NETFILTER_DROP at "
        f"nft_do_chain ({dropped} packets; drops counted {dropped} NETFILTER_DROP there (drops))"
    ) in v["causes"]
    assert (
        f"stalled: connected to {target}, but the data written was not acknowledged (1 of 1 "
        "attempts): the handshake passed, the data did not"
    ) in v["causes"]


@pytest.mark.parametrize("scenario", ["conntrack-full"], indirect=True)
def test_conntrack_full_table(capsys, scenario):
    """rt's table holds 64 established connections, the limit: each datagram
    why sends from h1 is a new flow rt has no room for, dropped there."""
    from tests.kernel.test_scenarios_counted import conntrack_stat

    before = conntrack_stat("rt")
    v = why(capsys, "h1", f"{scenarios.NAT_H2}:9", "-u", "-n", "2", "--timeout", "0.5")
    after = conntrack_stat("rt")
    dropped = after["drop"] - before["drop"]
    assert [a["outcome"] for a in v["attempts"]] == ["timeout"] * 2
    assert dropped == 2 and after["entries"] == after["count"] == scenarios.CT_LIMIT
    # the trace's netfilter drop in rt, said with why: no room for an entry
    assert v["causes"] == [
        f"conntrack table full in {topology.ns_name('rt')}: 64/64 entries (nf_conntrack_max), "
        f"{dropped} new connections dropped (conntrack), 2 packets dropped NETFILTER_DROP "
        "there (drops)"
    ]
