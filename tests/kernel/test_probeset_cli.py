"""The probe-set commands as users run them: subprocesses, JSON, exit codes,
nothing left attached; numbers checked against what the workload did."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from tests.kernel.test_cli_kernel import PYPROBE, start

pytestmark = [pytest.mark.root, pytest.mark.kernel]


@pytest.fixture
def pair():
    with VethPair(prefix=f"ps{os.getpid()}", net=13) as p:
        yield p


def test_drops_stream_json_has_each_refused_syn(pair, no_programs_left):
    proc = start("drops", "--stream", "-j", "-d", "2")
    assert traffic.refused(pair.path(pair.a), pair.addr_b, 9, 12) == 12
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    mine = [e for e in events if e["netns_name"] == pair.b]
    assert len(mine) == 12
    assert {(e["reason"], e["l4"], e["saddr"], e["dport"]) for e in mine} == {
        ("NO_SOCKET", "TCP", pair.addr_a, 9)
    }
    assert "lost events: 0" in err


def test_counts_json_reports_deltas(pair, no_programs_left):
    proc = start("netdev", "-j", "1", "2")
    time.sleep(0.2)
    traffic.udp_blast(pair.path(pair.a), pair.addr_b, 7000, 40)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    reports = [json.loads(line) for line in out.splitlines()]
    assert len(reports) == 2 and all(r["probe"] == "netdev" for r in reports)
    sent = [
        r
        for report in reports
        for r in report["rows"]
        if r["metric"] == "netdev_transmit_packets_total" and r["device"] == pair.dev_a
    ]
    assert sum(r["delta"] for r in sent) == sent[-1]["value"] >= 40


def test_conn_joins_resets_and_drops_per_connection(pair, no_programs_left):
    proc = start("conn", "-j", "2", "1")
    traffic.refused(pair.path(pair.a), pair.addr_b, 9, 5)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    conns = json.loads(out)["connections"]
    refused = [c for c in conns if c["endpoints"][1] == f"{pair.addr_b}:9"]
    assert len(refused) == 5
    for c in refused:
        assert (c["resets_sent"], c["resets_received"], c["drops"]) == (1, 1, {"NO_SOCKET": 1})
        assert c["comm"] and c["pid"]  # the connecting process, learned at connect()


def test_top_during_traffic_shows_every_panel(pair, no_programs_left):
    srv = traffic.Server(pair.path(pair.b), pair.addr_b, 7100)
    proc = subprocess.Popen(
        [PYPROBE, "top", "-i", "1", "-c", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Churn until top has drawn its frames: compiling every probe takes
        # 3-6 s here, longer under load, and traffic before that is not seen.
        deadline = time.monotonic() + 30
        while proc.poll() is None and time.monotonic() < deadline:
            traffic.churn(pair.path(pair.a), pair.addr_b, 7100, 20)
            time.sleep(0.3)
        out, err = proc.communicate(timeout=30)
    finally:
        srv.stop()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    for title in (
        "TCP state changes",
        "Drops",
        "softirq runs",
        "NAPI polls",
        "RX packets",
        "Retransmits",
        "Deepest socket queues",
        "qdisc backlog",
    ):
        assert title in out
    assert pair.dev_a in out and pair.b in out
    assert "ESTABLISHED" in out and "OLDSTATE" in out and "NEWSTATE" in out


def test_top_on_a_terminal_quits_on_q_and_leaves_the_terminal_as_it_was(no_programs_left):
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 160, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen(
        [PYPROBE, "top", "-i", "0.2"], stdin=slave, stdout=slave, stderr=slave, close_fds=True
    )
    screen = b""
    try:
        deadline = time.monotonic() + 30  # compiling every probe: 3-6 s, more under load
        while b"TCP state changes" not in screen and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                screen += os.read(master, 65536)
        assert b"TCP state changes" in screen, screen[-2000:]
        os.write(master, b"q")
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        after = termios.tcgetattr(slave)
        os.close(slave)
        os.close(master)
    assert b"Traceback" not in screen
    assert after == before  # echo and line mode back, for the shell that ran it


def test_bad_input_is_one_line_and_exit_2():
    for args, words in (
        (["drops", "--benign", "NOT_A_REASON"], "unknown drop reason NOT_A_REASON"),
        (["drops", "--stream", "1"], "INTERVAL/COUNT go with counts"),
        (["queues", "--netns", "no-such-ns"], "unknown network namespace"),
        (["top", "--probe", "nope"], "unknown probe 'nope'"),
        (["softirqs", "0"], "Invalid value"),
    ):
        proc = subprocess.run([PYPROBE, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, proc.stderr)
