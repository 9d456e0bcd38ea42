"""The pyprobe command itself, as users run it: subprocesses, signals, other users."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pyprobe import lab, registry
from pyprobe.hooks import usable_points
from pyprobe.kernel import KernelEnv
from tests.conftest import bpf_prog_count, quiet_prog_count, settled_prog_count

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
    with lab.VethPair(prefix=f"pc{os.getpid()}", net=12) as p:
        yield p


def test_json_stream_during_churn(pair, no_programs_left):
    server = lab.Server(pair.path(pair.a), pair.addr_a, 9000, "client")
    proc = start("tcpstates", "-j", "--netns", pair.b, "-d", "3")
    try:
        assert lab.churn(pair.path(pair.b), pair.addr_a, 9000, 30) == 30
        assert lab.refused(pair.path(pair.b), pair.addr_a, 9001, 10) == 10
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


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
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
    for hook in registry.manifests()["tcpstates"].hooks:
        assert hook.label in proc.stdout


def test_classic_tracepoint_fallback_gives_the_same_numbers(pair, no_programs_left):
    env = KernelEnv.detect()
    env.disabled_hooks = frozenset({"raw_tracepoint"})
    server = lab.Server(pair.path(pair.a), pair.addr_a, 9100, "server")
    try:
        with registry.create("tcpstates", env=env) as probe:
            probe.attach(stream=True)
            assert probe.hook.label == "tracepoint:sock:inet_sock_set_state"
            lab.churn(pair.path(pair.b), pair.addr_a, 9100, 25, "server")
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
