"""The fast netlink readers the exporter runs at every scrape, held to the
reference decoders: tc stats (tcstats.py) to pyroute2's, one AF_UNSPEC
sock_diag dump to one dump per family, and each_netns' threads to the
namespaces they were sent to."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import devices, namespaces, sockdiag, tcstats

pytestmark = [pytest.mark.root, pytest.mark.kernel]


@pytest.fixture
def pair():
    with VethPair(prefix=f"pr{time.monotonic_ns() % 100000}", net=78) as p:
        yield p


def sh(ns: str, cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd.split()], capture_output=True, text=True, check=True
    ).stdout


def pyroute2_qdiscs() -> list[dict]:
    from pyroute2 import IPRoute

    out = []
    with IPRoute() as ipr:
        for m in ipr.get_qdiscs():
            stats2 = m.get_attr("TCA_STATS2")
            queue = stats2.get_attr("TCA_STATS_QUEUE") or {}
            basic = stats2.get_attr("TCA_STATS_BASIC") or {}
            out.append(
                (
                    m["index"],
                    m.get_attr("TCA_KIND"),
                    f"{m['handle'] >> 16:x}:",
                    m["parent"] == 0xFFFFFFFF,
                    *(queue.get(k, 0) for k in ("qlen", "backlog", "drops", "requeues")),
                    queue.get("overlimits", 0),
                    basic.get("packets", 0),
                    basic.get("bytes", 0),
                )
            )
    return out


def ours() -> list[tuple]:
    keys = ("ifindex", "kind", "handle", "root", "qlen", "backlog", "drops", "requeues")
    return [
        tuple(q[k] for k in (*keys, "overlimits", "packets", "bytes")) for q in tcstats.qdiscs()
    ]


def test_tc_stats_equal_pyroute2s_after_traffic_through_htb_and_tbf(pair):
    sh(pair.a, f"tc qdisc add dev {pair.dev_a} root handle 1: htb default 10")
    sh(pair.a, f"tc class add dev {pair.dev_a} parent 1: classid 1:10 htb rate 2mbit")
    sh(
        pair.a,
        f"tc qdisc add dev {pair.dev_a} parent 1:10 handle 10: tbf rate 1mbit burst 4k limit 20k",
    )
    traffic.udp_blast(pair.path(pair.a), pair.addr_b, 7710, 300, size=1200)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # drained: the numbers stop moving
        if all(q["qlen"] == 0 for q in namespaces.run_in_netns(pair.path(pair.a), tcstats.qdiscs)):
            break
        time.sleep(0.2)
    got = namespaces.run_in_netns(pair.path(pair.a), ours)
    want = namespaces.run_in_netns(pair.path(pair.a), pyroute2_qdiscs)
    assert got == want
    tbf = next(q for q in got if q[1] == "tbf")
    assert tbf[6] > 0 and tbf[9] >= 300 - tbf[6]  # drops, and the rest went through


def test_one_dump_for_both_families_equals_a_dump_each(pair):
    def sockets() -> tuple[list, list]:
        v4 = socket.create_server((pair.addr_b, 0))
        v6 = socket.socket(socket.AF_INET6)
        v6.bind(("::1", 0))
        v6.listen(3)
        c6 = socket.create_connection(("::1", v6.getsockname()[1]))
        c4 = socket.create_connection(v4.getsockname())
        try:
            both = sockdiag.tcp_records()
            each = sockdiag.tcp_records((socket.AF_INET,)) + sockdiag.tcp_records(
                (socket.AF_INET6,)
            )
            return both, each
        finally:
            for s in (c4, c6, v4, v6):
                s.close()

    subprocess.run(
        ["ip", "netns", "exec", pair.b, "sysctl", "-qw", "net.ipv6.conf.lo.disable_ipv6=0"],
        check=True,
    )
    both, each = namespaces.run_in_netns(pair.path(pair.b), sockets)
    # the answers, not their netlink headers (type and sequence number differ)
    at = sockdiag.FAMILY
    assert sorted(r[at:] for r in both) == sorted(r[at:] for r in each)
    assert {r[sockdiag.FAMILY] for r in both} == {socket.AF_INET, socket.AF_INET6}
    assert len(both) >= 5  # two listeners, two connections with their accepted ends


def test_each_namespace_is_read_by_a_thread_that_entered_it():
    names = [f"ppeach{i}" for i in range(9)]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
            subprocess.run(  # no dummy module here: a veth pair inside
                ["ip", "-n", name, "link", "add", f"d-{name}", "type", "veth", "peer", f"p-{name}"],
                check=True,
            )
        inodes = {namespaces.inode_of(namespaces.NETNS_RUN_DIR / n): n for n in names}
        for _ in range(5):  # more namespaces than threads, several times over
            found = namespaces.each_netns(devices.links)
            for inode, name in inodes.items():
                assert sorted(found[inode].values()) == [f"d-{name}", "lo", f"p-{name}"]
            stats = namespaces.each_netns(sockdiag.tcp_stats)
            assert all(not stats[i] for i in inodes)
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
