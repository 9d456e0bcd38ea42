"""`pyprobe why` on the real kernel: a veth pair made here, and each failure
a destination can have, named first in the verdict: no listener, an nft
drop, no ARP answer, no route; and a reachable one. (The lab's failure
scenarios: test_why_scenarios.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from pyprobe import cli
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from tests.support import nstat_in

pytestmark = [pytest.mark.root, pytest.mark.kernel]
PORT = 7930


@pytest.fixture
def pair():
    with VethPair(prefix=f"wh{time.monotonic_ns() % 100000}", net=87) as made:
        yield made


def why(capsys, pair: VethPair, target: str, *options: str) -> dict:
    with pytest.raises(SystemExit) as e:
        cli.main(["why", "-j", "--netns", pair.a, *options, target])
        raise SystemExit(0)
    out = capsys.readouterr().out
    assert e.value.code == 0
    return json.loads(out)


def test_no_listener_is_a_refusal_from_the_namespace_that_reset(capsys, pair):
    v = why(capsys, pair, f"{pair.addr_b}:{PORT}", "-n", "2", "--timeout", "1")
    assert [a["outcome"] for a in v["attempts"]] == ["refused", "refused"]
    assert v["causes"][0] == (
        f"connect refused: no listener on {pair.addr_b}:{PORT} in {pair.b}: 2 SYNs dropped "
        "NO_SOCKET (drops), 2 resets sent (tcpretrans) (2 of 2 attempts)"
    )
    assert len(v["causes"]) == 1  # the SYN's NO_SOCKET drop is that refusal, not another cause


def test_an_nft_drop_is_named_with_its_netns_and_device(capsys, pair):
    subprocess.run(
        ["ip", "netns", "exec", pair.b, "nft",
         "add table inet why_test; add chain inet why_test in"
         " { type filter hook input priority 0; };"
         f" add rule inet why_test in tcp dport {PORT} drop"],
        check=True,
    )  # fmt: skip
    srv = traffic.Server(pair.path(pair.b), pair.addr_b, PORT)
    try:
        v = why(capsys, pair, f"{pair.addr_b}:{PORT}", "-n", "2", "--timeout", "1")
    finally:
        srv.stop()
    assert [a["outcome"] for a in v["attempts"]] == ["timeout", "timeout"]
    assert v["causes"][0].startswith(
        f"dropped by netfilter (a firewall rule) in netns {pair.b} on {pair.dev_b}: NETFILTER_DROP"
    )
    # each attempt's SYN and its retransmits, each dropped, each counted by drops too
    n = len(v["packets"])
    assert all(p["end"] == "dropped" for p in v["packets"]) and n >= 2
    assert v["causes"][0].endswith(
        f"({n} packets; drops counted {n} NETFILTER_DROP there (drops))"
    ), v["causes"]


def test_no_arp_answer_is_the_neighbour_layer(capsys, pair):
    nobody = pair.addr_b.rsplit(".", 1)[0] + ".9"
    v = why(capsys, pair, f"{nobody}:{PORT}", "-n", "1", "--timeout", "5")
    assert [a["outcome"] for a in v["attempts"]] == ["unreachable"]
    # the trace's NEIGH_FAILED drop, told by neigh: the address that failed
    assert v["causes"] == [
        f"no ARP reply from {nobody} on {pair.dev_a} in {pair.a}: resolution failed (neigh), "
        "1 packets dropped NEIGH_FAILED (drops)"
    ]


def test_no_route_fails_at_once_with_no_packet(capsys, pair):
    v = why(capsys, pair, f"10.231.199.9:{PORT}", "-n", "1", "--timeout", "1")
    # connect's own error, told by routes: the lookup that failed, and where
    assert v["causes"] == [
        f"no route to 10.231.199.0/24 in {pair.a} (table main): 1 lookups failed (routes), "
        f"IpOutNoRoutes +1; connect failed at once, no packet sent (1 of 1 attempts)"
    ]
    assert v["packets"] == []


def test_a_listener_is_reachable(capsys, pair):
    srv = traffic.Server(pair.path(pair.b), pair.addr_b, PORT)
    try:
        v = why(capsys, pair, f"{pair.addr_b}:{PORT}", "-n", "3", "--timeout", "1")
    finally:
        srv.stop()
    assert v["causes"][0].startswith("reachable: 3 of 3 attempts connected")
    assert len(v["causes"]) == 1


def test_udp_no_listener_is_refused_by_an_icmp_port_unreachable(capsys, pair):
    v = why(capsys, pair, f"{pair.addr_b}:{PORT}", "-u", "-n", "2", "--timeout", "1")
    assert [a["outcome"] for a in v["attempts"]] == ["refused", "refused"]
    assert v["causes"] == [
        f"refused: no listener on {pair.addr_b}:{PORT} (an ICMP port unreachable back, sent "
        f"in netns {pair.b} on {pair.dev_b}; 2 of 2 attempts)"
    ]
    # each datagram's own hops: the ICMP error sent about it, then its drop
    sent = [p for p in v["packets"] if p["summary"].startswith(f"{pair.addr_a}:")]
    assert len(sent) == 2
    for p in sent:
        hooks = [h["hook"] for h in p["hops"]]
        assert hooks[-2:] == ["icmp_send", "drop"], hooks
        assert p["hops"][-2]["what"] == "ICMP error sent about it (type 3 code 3)"


def test_udp_an_answering_service_is_reachable(capsys, pair):
    ready = threading.Event()

    def echo() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((pair.addr_b, PORT))
            s.settimeout(10)
            ready.set()
            for _ in range(2):
                data, peer = s.recvfrom(2048)
                s.sendto(data, peer)

    server = threading.Thread(target=namespaces.run_in_netns, args=(pair.path(pair.b), echo))
    server.start()
    ready.wait(5)
    v = why(capsys, pair, f"{pair.addr_b}:{PORT}", "-u", "-n", "2", "--timeout", "1")
    server.join()
    assert [a["outcome"] for a in v["attempts"]] == ["answered", "answered"]
    assert len(v["causes"]) == 1 and v["causes"][0].startswith(
        "reachable: 2 of 2 attempts answered"
    )


def test_a_probe_beside_the_trace_that_cannot_run_is_left_out(capsys, pair, monkeypatch):
    """neigh's tracepoints disabled (and no kprobes here): why runs without
    it, and the trace's own evidence still names the neighbour layer."""
    points = "neigh_create+neigh_timer_handler+neigh_update"
    monkeypatch.setenv("PYPROBE_DISABLE_HOOKS", f"tp_btf:{points},raw_tracepoint:{points}")
    nobody = pair.addr_b.rsplit(".", 1)[0] + ".9"
    v = why(capsys, pair, f"{nobody}:{PORT}", "-n", "1", "--timeout", "5")
    assert "neigh" not in v["beside"] and "drops" in v["beside"]
    assert v["causes"][0].startswith(
        f"dropped by the neighbour layer: no ARP/NDP answer in netns {pair.a} on {pair.dev_a}: "
        "NEIGH_FAILED"
    )


def _active_opens(pair: VethPair) -> int:
    return nstat_in(pair.path(pair.a))["TcpActiveOpens"]


def watched(capsys, target: str, clients) -> tuple[dict, list]:
    """`why --watch 25` while clients() runs, once it watches (its Ctrl-C
    handler in place: the probes are attached); then Ctrl-C ends the watch.
    What clients() returned."""
    done = []
    default = signal.getsignal(signal.SIGINT)

    def drive() -> None:
        deadline = time.monotonic() + 120  # loading takes ~20 s under emulation (TCG)
        while signal.getsignal(signal.SIGINT) is default and time.monotonic() < deadline:
            time.sleep(0.05)
        try:
            done.append(clients())
        finally:
            time.sleep(0.3)  # their last packets traced
            os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=drive)
    t.start()
    try:
        with pytest.raises(SystemExit) as e:
            cli.main(["why", "-j", "--watch", "25", target])
            raise SystemExit(0)
    finally:
        t.join()
    assert e.value.code == 0
    return json.loads(capsys.readouterr().out), done


@pytest.mark.parametrize("listening", [True, False])
def test_watch_reads_the_outcome_of_real_connections_from_their_packets(capsys, pair, listening):
    """No attempt of its own: the connections another process makes (in a)
    are the attempts, each one's outcome read from what came back: as many
    as that namespace opened (TcpActiveOpens), connected or refused."""
    srv = traffic.Server(pair.path(pair.b), pair.addr_b, PORT) if listening else None

    def clients() -> int:
        before = _active_opens(pair)
        traffic.churn(pair.path(pair.a), pair.addr_b, PORT, 3, failures=[])
        return _active_opens(pair) - before

    try:
        v, opened = watched(capsys, f"{pair.addr_b}:{PORT}", clients)
    finally:
        if srv:
            srv.stop()
    assert opened == [3]
    outcome = "connected" if listening else "refused"
    assert [a["outcome"] for a in v["attempts"]] == [outcome] * 3 and v["watched_s"] == 25
    if listening:
        assert v["causes"][0].startswith("reachable: 3 of 3 attempts connected (median ")
    else:
        assert v["causes"][0] == (
            f"connect refused: no listener on {pair.addr_b}:{PORT} in {pair.b}: 3 SYNs dropped "
            "NO_SOCKET (drops), 3 resets sent (tcpretrans) (3 of 3 attempts)"
        )
