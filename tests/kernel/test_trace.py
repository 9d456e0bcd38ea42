"""`pyprobe trace` on the real kernel: pings between two namespaces joined by
a veth pair made here, traced with a pcap filter. Exactly the packets sent
are traced, each with its hops in order across the right namespaces and
devices; a packet an nft rule drops ends at the drop with the kernel's
reason; a filter that matches nothing traces nothing."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from pyprobe import cli
from pyprobe.core import pcapfilter
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import devices
from pyprobe.netns.namespaces import NETNS_RUN_DIR
from pyprobe.views import trace as view
from tests.support import read_with_libpcap, registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]
N = 5


def ping(pair: VethPair, n: int = N) -> None:
    argv = ["ping", "-n", "-q", "-c", str(n), "-i", "0.2", "-W", "1", pair.addr_b]
    subprocess.run(["ip", "netns", "exec", pair.a, *argv], capture_output=True, timeout=30)


def traced(
    env, pair: VethPair | None, expression: str, traffic
) -> tuple[list[view.Packet], dict, int]:
    """The packets traced while traffic() ran, the program's counters, lost hops."""
    probe = registry.create("trace", env=env)
    probe.configure(expression=expression)
    tracker = view.Tracker(view.DeviceKinds())
    with probe:
        probe.attach(stream=True)
        traffic()
        time.sleep(0.3)
        packets = tracker.feed(probe.events(200)) + tracker.flush()
        return packets, probe.stats(), probe.lost()


def path(p: view.Packet) -> list[tuple[str, str, str]]:
    return [(h["hook"], h["netns_name"], h["device"]) for h in p.ordered]


def echo_request_path(pair: VethPair) -> list[tuple[str, str, str]]:
    """An echo request's hops: queued on the sender's veth, handed to its
    peer inside that transmit (netif_rx before net_dev_xmit returns), taken
    by the receiver's stack, answered and freed by icmp_rcv."""
    a, b, da, db = pair.a, pair.b, pair.dev_a, pair.dev_b
    return [
        ("queue", a, da),
        ("start_xmit", a, da),
        ("netif_rx", b, db),
        ("xmit", a, da),
        ("receive", b, db),
        ("consume", b, db),
    ]


@pytest.fixture
def pair():
    with VethPair(prefix=f"tt{time.monotonic_ns() % 100000}", net=84) as made:
        ping(made, 1)  # ARP resolved before the trace: only the pings are sent
        yield made


def test_each_echo_request_is_traced_once_with_its_hops_in_order(env, pair):
    packets, stats, lost = traced(
        env, pair, f"icmp[icmptype] == icmp-echo and dst host {pair.addr_b}", lambda: ping(pair)
    )
    assert lost == 0
    assert len(packets) == N == stats["matches"]
    seqs = []
    for p in packets:
        assert p.summary().startswith(f"{pair.addr_a} > {pair.addr_b} ICMP echo request")
        seqs.append(int(p.summary().split(" seq ")[1].split(",")[0]))
        assert path(p) == echo_request_path(pair)
        if env.raw_tracepoint_args("consume_skb") >= 2:  # 6.3+: where it was freed
            assert p.ordered[-1]["location"].startswith("icmp_rcv")
        assert {h["kind"] for h in p.hops} == {"veth"}
        assert not p.dropped
    assert seqs == list(range(seqs[0], seqs[0] + N))


def test_each_echo_reply_is_read_by_ping_through_its_raw_sockets_clone(env, pair):
    """ping (as root: a raw socket) reads a clone of each reply; the original
    goes on to ping_rcv, which has no ICMP socket for it (NO_SOCKET). The
    clone is found by the packet's identity and its hops join the packet."""
    expression = f"icmp[icmptype] == icmp-echoreply and dst host {pair.addr_a}"
    packets, _, lost = traced(env, pair, expression, lambda: ping(pair))
    assert lost == 0 and len(packets) == N
    for p in packets:
        clones = [h for h in p.ordered if h["flags"] & view.F_CLONE]
        assert [h["hook"] for h in clones] == ["copy", "consume"]
        assert clones[0]["comm"] == "ping" and clones[0]["netns_name"] == pair.a
        assert p.end == "freed" and p.dropped is None


def test_a_packet_an_nft_rule_drops_ends_at_the_drop_with_its_reason(env, pair):
    subprocess.run(
        ["ip", "netns", "exec", pair.b, "nft",
         "add table inet trace_test; add chain inet trace_test in"
         " { type filter hook input priority 0; };"
         " add rule inet trace_test in icmp type echo-request drop"],
        check=True,
    )  # fmt: skip
    packets, _, lost = traced(env, pair, f"icmp and host {pair.addr_b}", lambda: ping(pair))
    assert lost == 0
    assert len(packets) == N  # no replies: every request dropped
    for p in packets:
        last = p.ordered[-1]
        assert p.dropped is last
        assert last["drop_reason"] == "NETFILTER_DROP"
        # where netfilter freed it (6.18: the rule's verdict, in nft_do_chain)
        assert last["location"].partition("+")[0] in ("nf_hook_slow", "nft_do_chain")
        assert (last["netns_name"], last["device"]) == (pair.b, pair.dev_b)
        assert path(p)[:2] == [("queue", pair.a, pair.dev_a), ("start_xmit", pair.a, pair.dev_a)]
        assert p.record()["end"] == "dropped"


def test_a_packet_a_tc_filter_drops_ends_at_the_drop_on_that_device(env, pair):
    from pyprobe.lab import impair
    from pyprobe.netns import namespaces

    # the lab's cls_bpf classifier on b's ingress, dropping every IPv4 packet
    drop_all = functools.partial(impair.tc_drop, pair.dev_b, 10, ["-DLOSS_PPM=1000000"])
    namespaces.run_in_netns(pair.path(pair.b), drop_all)
    packets, _, lost = traced(env, pair, f"icmp and host {pair.addr_b}", lambda: ping(pair))
    assert lost == 0 and len(packets) == N
    for p in packets:
        last = p.ordered[-1]
        assert (last["hook"], last["drop_reason"]) == ("drop", "TC_INGRESS")
        assert (last["netns_name"], last["device"]) == (pair.b, pair.dev_b)
        # where the ingress hook freed it (a clone of the function: .constprop.0)
        assert last["location"].startswith(("__netif_receive_skb_core", "sch_handle_ingress"))


def test_a_qdisc_adds_its_enqueue_and_dequeue_with_its_handle(env, pair):
    tbf = ["tc", "qdisc", "add", "dev", pair.dev_a, "root", "handle", "5:", "tbf", "rate",
           "10mbit", "burst", "32k", "latency", "50ms"]  # fmt: skip
    subprocess.run(["ip", "netns", "exec", pair.a, *tbf], check=True)
    expression = f"icmp[icmptype] == icmp-echo and dst host {pair.addr_b}"
    packets, _, lost = traced(env, pair, expression, lambda: ping(pair))
    assert lost == 0 and len(packets) == N
    for p in packets:
        assert [h for h in path(p) if h[0] != "netif_rx"][:5] == [
            ("queue", pair.a, pair.dev_a), ("enqueue", pair.a, pair.dev_a),
            ("dequeue", pair.a, pair.dev_a), ("start_xmit", pair.a, pair.dev_a),
            ("xmit", pair.a, pair.dev_a),
        ]  # fmt: skip
        assert [view.what(h) for h in p.ordered][1:3] == ["qdisc enqueue 5:0", "qdisc dequeue 5:0"]


def test_a_filter_that_matches_nothing_traces_nothing(env, pair):
    packets, stats, lost = traced(env, pair, "host 10.99.99.99", lambda: ping(pair))
    assert packets == [] and lost == 0
    assert stats["matches"] == stats["hops"] == 0
    assert stats["filter_runs"] >= 2 * N  # it did look: each request and each reply


def test_the_command_prints_each_packet_and_stops_at_count(pair, capsys, tmp_path):
    """The CLI as users run it (compiler process, program cache), NDJSON:
    pings keep coming until it has shown 3 packets (it may be compiling)."""
    sender = subprocess.Popen(
        ["ip", "netns", "exec", pair.a, "ping", "-n", "-q", "-i", "0.2", "-w", "30", pair.addr_b],
        stdout=subprocess.DEVNULL,
    )
    try:
        with pytest.raises(SystemExit) as e:
            pcap, expression = str(tmp_path / "t.pcapng"), f"icmp and dst host {pair.addr_b}"
            cli.main(["trace", "-j", "-c", "3", "-d", "25", "-w", pcap, expression])
            raise SystemExit(0)
    finally:
        sender.terminate()
        sender.wait()
    out = capsys.readouterr().out
    assert e.value.code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert len(records) == 3
    for r in records:
        assert "ICMP echo request" in r["summary"] and r["end"] == "freed"
        first = r["hops"][0]
        assert (first["hook"], first["kind"], first["netns_name"]) == ("queue", "veth", pair.a)
    # the same packets in the file, as libpcap reads it, and its filter agrees
    _, packets = read_with_libpcap(tmp_path / "t.pcapng")
    insns = pcapfilter.compile_bpf(f"icmp and dst host {pair.addr_b}", pcapfilter.DLT_EN10MB)
    assert len(packets) == 3
    assert all(pcapfilter.bpf_filter(insns, data, wire) for data, wire in packets)
    assert all(wire == 98 for _, wire in packets)  # 14 + 84: the whole echo request


def test_a_tcp_request_every_packet_sent_traced_once_and_read_by_its_process(env, pair):
    """Every packet either side sent (the veths' own tx counters) is one
    traced packet; the request's data is read by this process, in b."""
    port = 7940

    srv = traffic.Server(pair.path(pair.b), pair.addr_b, port)
    counts = []

    def request() -> None:
        counts.append(sent(pair))
        assert traffic.churn(pair.path(pair.a), pair.addr_b, port, 1) == 1
        time.sleep(0.2)
        counts.append(sent(pair))

    try:
        packets, _, lost = traced(env, pair, f"tcp port {port}", request)
    finally:
        srv.stop()
    assert lost == 0
    assert len(packets) == counts[1] - counts[0] >= 6  # handshake, request, reply, FINs
    syn = packets[0]
    assert syn.headers().tcp_flags == "S" and syn.headers().dport == port
    assert path(syn)[:3] == [
        ("queue", pair.a, pair.dev_a), ("start_xmit", pair.a, pair.dev_a),
        ("netif_rx", pair.b, pair.dev_b),
    ]  # fmt: skip
    data = next(p for p in packets if "P" in p.headers().tcp_flags and p.headers().dport == port)
    read = [h for h in data.hops if h["hook"] == "copy"]
    assert read and read[0]["netns_name"] == pair.b and read[0]["pid"] == os.getpid()


# Where a packet is queued for transmit and received, in order, across the
# lab's topologies (pyprobe/lab/topology.py): the bridge forwards from port
# to port without a receive of its own; VXLAN encapsulates on sw1's underlay
# and decapsulates at sw2's vxlan device.
LAB_PATHS = {
    "bridge": [
        ("h1", "eth0", "queue"), ("sw", "port1", "receive"), ("sw", "port2", "queue"),
        ("h2", "eth0", "receive"),
    ],
    "vxlan": [
        ("h1", "eth0", "queue"), ("sw1", "port", "receive"), ("sw1", "vxlan42", "queue"),
        ("sw1", "underlay", "queue"), ("sw2", "underlay", "receive"),
        ("sw2", "vxlan42", "gro"), ("sw2", "vxlan42", "receive"), ("sw2", "port", "queue"),
        ("h2", "eth0", "receive"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LAB_PATHS))
def test_pings_across_the_lab_topologies_show_every_device_in_order(env, name):
    from pyprobe.lab import topology

    # The lab's namespaces are one set per machine, and a lab that fails to
    # come up removes them all: never start one while another test's is up
    # (or coming up: its state file is written last).
    if topology.active() is not None or list(NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*")):
        pytest.skip("a lab is up or coming up (another test's)")
    with topology.Lab(name) as lab:
        h1, h2 = lab.hosts["h1"], lab.hosts["h2"]

        def pings(n: int = N) -> None:
            argv = ["ping", "-n", "-q", "-c", str(n), "-i", "0.2", "-W", "1", h2["addr"]]
            subprocess.run(
                ["ip", "netns", "exec", h1["netns"], *argv], capture_output=True, timeout=30
            )

        pings(1)  # ARP and the bridges' forwarding tables settled first
        expression = f"icmp[icmptype] == icmp-echo and dst host {h2['addr']}"
        packets, _, lost = traced(env, None, expression, pings)
    assert lost == 0 and len(packets) == N
    want = [(topology.ns_name(ns), dev, hook) for ns, dev, hook in LAB_PATHS[name]]
    for p in packets:
        got = [
            (h["netns_name"], h["device"], h["hook"])
            for h in p.ordered
            if h["hook"] in ("queue", "receive", "gro")
        ]
        assert got == want
        end = p.ordered[-1]
        assert (end["hook"], end["netns_name"]) == ("consume", h2["netns"])
        if name == "vxlan":
            assert {h["kind"] for h in p.hops} == {"veth", "vxlan"}
            flags = [h["flags"] for h in p.ordered if h["hook"] in ("queue", "gro")]
            assert flags[2] & view.F_ENCAP and flags[3] & view.F_DECAP  # underlay, vxlan42


def sent(pair: VethPair) -> int:
    """Packets both ends of the pair have sent (their own tx counters)."""
    a = devices.link_stats(pair.path(pair.a))[pair.dev_a]["tx_packets"]
    return a + devices.link_stats(pair.path(pair.b))[pair.dev_b]["tx_packets"]


def _links() -> int:
    """BPF links this process holds (each attached point is one)."""
    n = 0
    for fd in os.listdir("/proc/self/fdinfo"):
        with contextlib.suppress(OSError):
            n += "link_type:" in Path(f"/proc/self/fdinfo/{fd}").read_text()
    return n


def test_at_rest_only_the_entries_stay_attached_and_a_match_resumes_following(env, pair):
    """While nothing matches, the follow-only hooks (and netif_rx) are
    detached (resting): each packet the veth sends is judged once, at its
    queue, and nothing else runs for it. The first match attaches them
    again: that packet is marked as followed only from then on, and every
    later one has its whole path."""
    a, b, da = pair.a, pair.b, pair.dev_a
    probe = registry.create("trace", env=env)
    probe.configure(expression=f"icmp[icmptype] == icmp-echo and dst host {pair.addr_b}")
    probe.rest_after = 0.5
    tracker = view.Tracker(view.DeviceKinds())
    with probe:
        before = _links()
        probe.attach(stream=True)
        everything = _links() - before
        deferred = [p for p in probe.hook.points if p.deferred]
        probe.tick(time.monotonic() + 0.4)
        assert probe.following
        probe.tick(time.monotonic() + 0.6)
        assert not probe.following and _links() - before == everything - len(deferred) > 0
        # at rest, each packet the veths send (pings not matching, ARP) is
        # judged once, at its queue; its receive (netif_rx) runs nothing
        stats0, sent0 = probe.stats(), sent(pair)
        subprocess.run(
            ["ip", "netns", "exec", b, "ping", "-n", "-q", "-c", "3", "-i", "0.2", pair.addr_a],
            capture_output=True,
            timeout=30,
        )
        stats1, sent1 = probe.stats(), sent(pair)
        # and the 3 replies again where ping_rcv drops them (NO_SOCKET: ping
        # reads a raw socket's clone). The counter is the machine's: what
        # other namespaces send at the same time adds to it.
        assert stats1["filter_runs"] - stats0["filter_runs"] >= sent1 - sent0 + 3 >= 9
        assert stats1["inherited"] == stats0["inherited"]  # no receive ran
        assert not probe.following
        packets: list[view.Packet] = []
        ping(pair, 1)  # the first match: it wakes us, and we attach the rest
        deadline = time.monotonic() + 10
        while not probe.following and time.monotonic() < deadline:
            packets += tracker.feed(probe.events(50))
        assert probe.following and _links() - before == everything
        ping(pair)
        time.sleep(0.3)
        packets += tracker.feed(probe.events(200)) + tracker.flush()
    assert len(packets) == 1 + N
    # (shown as each ended: the first, not followed to its end, went quiet last)
    first, *rest = sorted(packets, key=lambda p: p.first["ts_ns"])
    # back within milliseconds on an idle machine; the bound is for a busy one
    assert first.resumed_ms is not None and 0 < first.resumed_ms < 2000
    assert path(first)[0] == ("queue", a, da) and "(followed only from" in view.lines(first, 1)[0]
    for p in rest:
        assert p.resumed_ms is None
        assert path(p) == echo_request_path(pair)
