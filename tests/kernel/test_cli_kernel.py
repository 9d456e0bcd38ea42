"""The pyprobe command itself, as users run it: subprocesses, signals, other users."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from pyprobe.core.hooks import usable_points
from pyprobe.kernel.env import KernelEnv
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from tests.conftest import bpf_prog_count, quiet_prog_count, settled_prog_count
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]
PYPROBE = str(Path(sys.executable).with_name("pyprobe"))


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    """Start pyprobe and wait until it says it is tracing (stderr)."""
    proc = subprocess.Popen(
        [PYPROBE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = proc.stderr.readline()
    assert line.startswith(("Tracing", "Counting", "Joining")), line + proc.stderr.read()
    return proc


@pytest.fixture
def pair():
    with VethPair(prefix=f"pc{os.getpid()}", net=12) as p:
        yield p


def test_json_stream_during_churn(pair, no_programs_left):
    server = traffic.Server(pair.path(pair.a), pair.addr_a, 9000, "client")
    proc = start("tcpstates", "-j", "--netns", pair.b, "-d", "3")
    try:
        assert traffic.churn(pair.path(pair.b), pair.addr_a, 9000, 30) == 30
        assert traffic.refused(pair.path(pair.b), pair.addr_a, 9001, 10) == 10
        out, err = proc.communicate(timeout=10)
    finally:
        server.stop()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert {e["netns_name"] for e in events} == {pair.b}
    assert Counter((e["oldstate"], e["newstate"]) for e in events) == {
        ("CLOSE", "SYN_SENT"): 40,
        ("SYN_SENT", "ESTABLISHED"): 30,
        ("SYN_SENT", "CLOSE"): 10,
        ("ESTABLISHED", "FIN_WAIT1"): 30,
        ("FIN_WAIT1", "FIN_WAIT2"): 30,
        ("FIN_WAIT2", "CLOSE"): 30,
    }
    assert "lost events: 0" in err


def exchange(pair: VethPair, sizes: list[tuple[int, int]], port: int) -> float:
    """Connections from b to a listener in a: the client sends up, the server
    reads it all, answers down and closes first; then the listener closes.
    Returns how long it all took (seconds)."""
    began = time.monotonic()
    listening = threading.Event()

    def serve() -> None:
        with socket.create_server((pair.addr_a, port)) as srv:
            listening.set()
            for up, down in sizes:
                conn, _ = srv.accept()
                with conn:
                    got = 0
                    while got < up:
                        got += len(conn.recv(65536))
                    conn.sendall(b"d" * down)

    def client() -> None:
        for up, down in sizes:
            with socket.create_connection((pair.addr_a, port), timeout=5) as c:
                c.sendall(b"u" * up)
                got = 0
                while chunk := c.recv(65536):
                    got += len(chunk)
                assert got == down

    server = namespaces.start_in_netns(pair.path(pair.a), serve)
    assert listening.wait(5)
    namespaces.run_in_netns(pair.path(pair.b), client)
    server.join(5)
    return time.monotonic() - began


def test_tcplife_one_line_per_connection_with_its_bytes_and_age(pair, no_programs_left):
    sizes = [(1000 * k + 7, 300 * k + 1) for k in range(1, 6)]
    servers = start("tcplife", "-j", "--netns", pair.a, "-d", "3")
    clients = start("tcplife", "--netns", pair.b, "-d", "3")
    took = exchange(pair, sizes, 9100)
    out, err = servers.communicate(timeout=10)
    text, _ = clients.communicate(timeout=10)
    assert servers.returncode == clients.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert all(e["newstate"] == "CLOSE" and e["netns_name"] == pair.a for e in events)
    listener = [e for e in events if e["oldstate"] == "LISTEN"]
    accepted = [e for e in events if e["oldstate"] != "LISTEN"]
    assert len(listener) == 1 and (listener[0]["rx_bytes"], listener[0]["tx_bytes"]) == (0, 0)
    assert len(accepted) == len(sizes)
    # The kernel counts in sequence space, as tcp_info's bytes_received and
    # bytes_acked do: the peer's FIN, or its own, may add one.
    for e, (up, down) in zip(sorted(accepted, key=lambda e: e["ts_ns"]), sizes, strict=True):
        assert up <= e["rx_bytes"] <= up + 1 and down <= e["tx_bytes"] <= down + 1, (e, up, down)
        assert 0 < e["life_ms"] < took * 1000 and e["owner_known"] and e["pid"] == os.getpid()
    assert listener[0]["life_ms"] >= max(e["life_ms"] for e in accepted)
    # The client side, as text: KiB sent (a SYN and a FIN may add one each) and received
    lines = text.splitlines()
    assert lines[0].split() == [
        "PID", "COMM", "NETNS", "LADDR:LPORT", "RADDR:RPORT", "TX_KB", "RX_KB", "MS"
    ]  # fmt: skip
    rows = [line.split() for line in lines[1:]]
    assert [(int(r[5]), int(r[6])) for r in rows] == [(up >> 10, down >> 10) for up, down in sizes]
    assert all(r[2] == pair.b and r[4] == f"{pair.addr_a}:9100" for r in rows)
    assert all(0 < float(r[7]) < took * 1000 for r in rows)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 0), (signal.SIGTERM, 143)])
def test_signals_detach_everything(sig, code):
    before = quiet_prog_count()
    proc = start("tcpstates")
    probe = registry.create("tcpstates")
    points = usable_points(probe.available().hook, probe.env, stream=True)
    assert bpf_prog_count() == before + len(points)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=5)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert settled_prog_count(before) == before


def test_summary_counts_once(pair, no_programs_left):
    proc = start("tcpstates", "--summary", "-j", "--netns", pair.a, "1", "1")
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    record = json.loads(out)
    assert record["sockets"] == {pair.a: {}}  # a fresh namespace: no sockets yet


@pytest.mark.skipif(not shutil.which("runuser"), reason="runuser missing")
def test_not_root_is_one_clear_line():
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", PYPROBE, "tcpstates"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("pyprobe: error: permission denied: loading eBPF needs root")
    assert proc.stderr.count("\n") == 1


@pytest.mark.skipif(not shutil.which("runuser"), reason="runuser missing")
def test_doctor_as_non_root_reports_to_the_end():
    proc = subprocess.run(
        ["runuser", "-u", "nobody", "--", PYPROBE, "doctor"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "[!!] tracefs        not readable without root" in proc.stdout
    assert "[!!] capabilities   none: run as root" in proc.stdout
    assert "probes can run here once the problem above is fixed" in proc.stdout
    assert proc.stderr == ""


def test_unknown_probe_and_bad_filter_exit_2():
    for args, msg in (
        (["nosuchprobe"], "No such command 'nosuchprobe'"),
        (["tcpstates", "-L", "http"], "bad port 'http'"),
    ):
        proc = subprocess.run([PYPROBE, *args], capture_output=True, text=True, timeout=30)
        assert proc.returncode == 2 and msg in proc.stderr and proc.stderr.count("\n") == 1


def test_doctor_explains_every_choice():
    proc = subprocess.run([PYPROBE, "doctor"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stdout
    assert "tcpstates: uses tp_btf:inet_sock_set_state" in proc.stdout
    for hook in registry.manifests["tcpstates"].hooks:
        assert hook.label in proc.stdout


def test_classic_tracepoint_fallback_gives_the_same_numbers(pair, no_programs_left):
    env = KernelEnv.detect()
    env.disabled_hooks = frozenset({"raw_tracepoint"})
    server = traffic.Server(pair.path(pair.a), pair.addr_a, 9100, "server")
    try:
        with registry.create("tcpstates", env=env) as probe:
            probe.attach(stream=True)
            assert probe.hook.label == "tracepoint:sock:inet_sock_set_state"
            traffic.churn(pair.path(pair.b), pair.addr_a, 9100, 25, "server")
            time.sleep(0.2)
            events = [e for e in probe.events(300) if e["netns"] == pair.inode(pair.a)]
    finally:
        server.stop()
    assert Counter((e["oldstate"], e["newstate"]) for e in events) == {
        ("LISTEN", "SYN_RECV"): 25,
        ("SYN_RECV", "ESTABLISHED"): 25,
        ("ESTABLISHED", "FIN_WAIT1"): 25,
        ("FIN_WAIT1", "FIN_WAIT2"): 25,
        ("FIN_WAIT2", "CLOSE"): 25,
    }
    assert all(e["sport"] == 9100 and e["saddr"] == pair.addr_a for e in events)


@pytest.mark.parametrize("gap", [0.0, 0.001, 0.01, 0.05])
def test_a_second_sigint_does_not_lose_the_report(gap, no_programs_left):
    """`timeout -s INT` signals the command and its group: two SIGINTs. The
    first ends the count; the report comes out whole, exit 0, whatever the
    gap before the second (it was lost, exit 130, or the process died by the
    signal)."""
    proc = start("softirqs", "-j")
    proc.send_signal(signal.SIGINT)
    time.sleep(gap)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    (report,) = [json.loads(line) for line in out.splitlines()]
    assert report["probe"] == "softirqs" and report["rows"]
    assert "Traceback" not in err
