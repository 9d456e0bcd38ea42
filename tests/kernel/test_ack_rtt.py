"""queues' acks feature: tcp:tcp_probe's smoothed RTT at each segment an
established socket receives, as an in-kernel histogram per netns.

Ground truth for the count: each namespace's nstat counters. tcp_v4_rcv()
counts every TCP segment (skb) it receives in TcpInSegs, once; in a
namespace whose only TCP socket is one established connection, each of them
reaches tcp_rcv_established(), which fires tcp_probe first thing — except
one that arrives while the socket is owned by its reader and is merged into
the last skb of the backlog (TcpExtTCPBacklogCoalesce: one call for both) or
dropped there (TcpExtTCPBacklogDrop). So between two readings taken while
the connection is established (its handshake done before, its close after),
the histogram's count must equal InSegs - BacklogCoalesce - BacklogDrop,
exactly, at each end (InSegs alone was 367 against 351 counted, once).
The RTT, exactly: once the connection is quiet, each end's srtt read from
TCP_INFO (tcpi_rtt: srtt_us >> 3, what `ss -ti` prints), then one segment
to that end: tcp_probe fires first thing on it, before the ACK it carries
updates srtt, so that end's histogram gains one sample, in srtt's bucket.
(A median over the ping-pong against `ss -ti` read once at its end was
off by 4 buckets once: one late ACK moves srtt tenfold on a veth.)"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import threading
import time

import pytest

from pyprobe.errors import PyprobeError
from pyprobe.kernel.env import KernelEnv
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from tests.kernel.test_cli_kernel import PYPROBE
from tests.support import nstat_in, registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]

PORT, ROUNDS, BULK = 7930, 300, 4 << 20
METRIC = "tcp_ack_rtt_seconds"


def reached(path) -> int:
    """Segments that reached tcp_rcv_established (or would have): the
    namespace's TcpInSegs less those coalesced or dropped at the backlog."""

    c = nstat_in(path)
    return c["TcpInSegs"] - c["TcpExtTCPBacklogCoalesce"] - c["TcpExtTCPBacklogDrop"]


def slot(ns: float) -> int:
    """The exp2 bucket of a value in nanoseconds, as bpf/pyprobe_bpf.h's hist_slot."""
    return 0 if ns <= 1 else (int(ns) - 1).bit_length()


def histogram(probe, inode: int) -> list[int]:
    """The namespace's bucket counts (none yet: zeros)."""
    rows = [r for r in probe.rows() if r["metric"] == METRIC and r["netns"] == str(inode)]
    assert len(rows) <= 1
    buckets = rows[0]["buckets"] if rows else []
    return buckets + [0] * (64 - len(buckets))


@pytest.mark.parametrize(
    ("disabled", "hook"),
    [("", "tp_btf"), ("tp_btf", "raw_tracepoint"), ("raw_tracepoint", "tracepoint")],
)
def test_ack_rtt_counts_every_received_segment_and_its_srtt(disabled, hook, monkeypatch):
    """Each hook: tcp_sock's srtt_us read at its BTF offset (tp_btf, raw), or
    the tracepoint's own srtt field."""
    monkeypatch.setenv("PYPROBE_DISABLE_HOOKS", disabled)
    env = KernelEnv.detect()
    probe = registry.create("queues", env=env, features=["acks"])
    if hook == "tracepoint" and "skaddr" not in env.tracepoint_fields("tcp:tcp_probe"):
        # before 6.x's skaddr (6.1 has none): no socket, no namespace to count in
        with pytest.raises(PyprobeError, match="tcp:tcp_probe has no field skaddr here"):
            probe.attach()
        return
    with VethPair(prefix=f"ak{time.monotonic_ns() % 100000}", net=93) as pair, probe:
        probe.attach()
        assert probe.hook is not None and probe.hook.kind == hook
        a, b = pair.path(pair.a), pair.path(pair.b)
        ino = {pair.a: pair.inode(pair.a), pair.b: pair.inode(pair.b)}

        srv = namespaces.run_in_netns(b, lambda: socket.create_server((pair.addr_b, PORT)))
        cli = namespaces.run_in_netns(a, lambda: socket.create_connection((pair.addr_b, PORT)))
        conn, _ = srv.accept()
        for s in (cli, conn):
            s.settimeout(10)  # a hang fails the test instead
        try:
            time.sleep(0.3)  # the handshake's last ACK processed: from here, ESTABLISHED only
            start = {ns: reached(pair.path(ns)) for ns in ino}
            hist = {ns: histogram(probe, ino[ns]) for ns in ino}

            ping_pong(cli, conn, ROUNDS)  # each end's srtt settles on the path's RTT
            # one segment to each end, its srtt read just before
            rtt = {}
            for ns, me, peer, byte in ((pair.a, cli, conn, b"q"), (pair.b, conn, cli, b"r")):
                before = histogram(probe, ino[ns])
                rtt[ns] = srtt_us(me)
                peer.sendall(byte)
                assert me.recv(1) == byte
                time.sleep(0.1)  # its quick ACK back counted (at the other end)
                delta = [x - y for x, y in zip(histogram(probe, ino[ns]), before, strict=True)]
                rtt[ns] = (rtt[ns], delta)

            # then a bulk transfer, read as it comes: many more ACKs, and GSO-sized data
            reader = threading.Thread(target=drain, args=(conn, BULK))
            reader.start()
            cli.sendall(b"z" * BULK)
            reader.join(timeout=30)
            assert not reader.is_alive()
            time.sleep(0.2)
            stop = {ns: reached(pair.path(ns)) for ns in ino}
            end = {ns: histogram(probe, ino[ns]) for ns in ino}
        finally:
            for s in (cli, conn, srv):
                s.close()

    for ns in ino:
        received = stop[ns] - start[ns]
        counted = sum(end[ns]) - sum(hist[ns])
        assert counted == received, (ns, counted, received)
        assert received > ROUNDS  # every pong or ping at least

        srtt, delta = rtt[ns]
        assert [k for k, n in enumerate(delta) if n] == [slot(srtt * 1000)], (ns, srtt)
        assert delta[slot(srtt * 1000)] == 1


def ping_pong(cli: socket.socket, conn: socket.socket, rounds: int) -> None:
    """A byte each way, rounds times; then the connection quiet: the last
    pong's ACK sent now (delayed, 40 ms, it would move the server's srtt by
    an eighth of that after every sample the histogram holds)."""
    for _ in range(rounds):
        cli.sendall(b"x")
        assert conn.recv(1) == b"x"
        conn.sendall(b"y")
        assert cli.recv(1) == b"y"
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
    time.sleep(0.2)


def srtt_us(s: socket.socket) -> int:
    """tcp_info's tcpi_rtt (at byte 68 of struct tcp_info): srtt_us >> 3."""
    return struct.unpack_from("I", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104), 68)[0]


def drain(conn: socket.socket, size: int) -> None:
    got = 0
    while got < size:
        chunk = conn.recv(1 << 20)
        assert chunk
        got += len(chunk)


def test_queues_ack_rtt_cli_reports_what_the_namespace_received():
    """`pyprobe queues --ack-rtt -j`: its namespace's count since it started
    equals the segments that reached tcp_rcv_established there. The
    connection is made (and idle) before it starts, so nothing of the
    handshake, and nothing between its start and the baseline, is counted."""
    with VethPair(prefix=f"ac{time.monotonic_ns() % 100000}", net=94) as pair:
        a, b = pair.path(pair.a), pair.path(pair.b)
        inode = str(pair.inode(pair.a))
        srv = namespaces.run_in_netns(b, lambda: socket.create_server((pair.addr_b, PORT)))
        cli = namespaces.run_in_netns(a, lambda: socket.create_connection((pair.addr_b, PORT)))
        conn, _ = srv.accept()
        for s in (cli, conn):
            s.settimeout(10)
        proc = subprocess.Popen(
            [PYPROBE, "queues", "--ack-rtt", "-j", "--netns", pair.a, "1", "3"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline())  # attached
            baseline = reached(a)
            ping_pong(cli, conn, 50)
            received = reached(a) - baseline
            *_, last = [json.loads(line) for line in proc.stdout]
            assert proc.wait(10) == 0
        finally:
            proc.kill()
            for s in (cli, conn, srv):
                s.close()
    assert first["ack_rtt"] == []
    (row,) = last["ack_rtt"]
    assert (row["netns"], row["netns_name"]) == (inode, pair.a)
    assert row["count"] == received >= 50
    assert 0 < row["p50"] <= row["p99"] < 0.1  # seconds: a veth's RTT, well under 100 ms
