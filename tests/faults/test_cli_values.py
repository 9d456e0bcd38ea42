"""8c. Absurd command lines: negative, infinite or NaN intervals, huge counts,
bad ports and pids, unknown namespaces, bad sizes and caps, malformed
environment overrides. Each is one line on stderr and exit 2, before any BPF
program is loaded."""

from __future__ import annotations

import signal

import pytest

from pyprobe import cli
from tests.conftest import bpf_prog_count
from tests.support import registry

pytestmark = [pytest.mark.root]
LIMIT = 30  # seconds a case may take

CASES = [
    ["tcpstates", "--summary", "-1"],
    ["tcpstates", "--summary", "0"],
    ["tcpstates", "--summary", "nan"],
    ["tcpstates", "--summary", "inf"],
    ["tcpstates", "--summary", "1e309"],
    ["tcpstates", "--summary", "1", "0"],
    ["tcpstates", "--summary", "1", "99999999999999999999999"],
    ["tcpstates", "-d", "-5"],
    ["tcpstates", "-d", "nan"],
    ["tcpstates", "-p", "0"],
    ["tcpstates", "-p", "99999999999"],
    ["tcpstates", "-L", "70000"],
    ["tcpstates", "-L", "80,abc"],
    ["tcpstates", "-D", "-1"],
    ["tcpstates", "--netns", "no-such-namespace"],
    ["tcpstates", "--netns", "4294967295", "-d", "1"],
    ["tcpstates", "--buffer-pages", "3"],
    ["tcpstates", "--buffer-pages", "0"],
    ["tcpstates", "--buffer-pages", "99999999"],
    ["tcplife", "-d", "nan"],
    ["tcplife", "-L", "0"],
    ["tcplife", "--netns", "no-such-namespace"],
    ["tcplife", "1"],
    ["drops", "-1"],
    ["drops", "--benign", "NOT_A_REASON"],
    ["drops", "--stream", "5"],
    ["tcpretrans", "-d", "1"],
    ["tcpstates", "--summary", "-d", "1"],
    ["drops", "-b", "64", "-T"],
    ["netdev", "1", "-3"],
    ["netdev", "-n", "0"],
    ["queues", "--netns", "../../etc"],
    ["top", "-i", "0"],
    ["top", "-i", "0.01"],
    ["top", "-c", "0"],
    ["softirqs", "--nope"],
    ["nosuchprobe"],
    ["export", "--web.listen-address", "127.0.0.1:99999"],
    ["export", "--web.listen-address", "nonsense"],
    ["export", "--web.listen-address", ":"],
    ["export", "--web.telemetry-path", "/"],
    ["export", "--web.telemetry-path", "metrics"],
    ["export", "--label-cap", "netns=0"],
    ["export", "--label-cap", "netns"],
    ["export", "--probe", "nope"],
    # every default probe excluded: nothing left to export
    ["export", *[a for n in registry.names() for a in ("--no-probe", n)]],
    ["export", "--web.config.file", "/nonexistent/web.yml"],
    ["export", "--drop-privileges", "no-such-user"],
    ["lab", "up", "--loss", "100"],
    ["lab", "up", "--loss", "-1"],
    ["lab", "up", "-t", "mesh"],
    ["lab", "up", "--rate", "fast"],
    ["lab", "up", "--rate", "0mbit"],
    ["lab", "traffic", "--connections", "0"],
    ["lab", "traffic", "--connections", "1000000"],
    ["lab", "traffic", "no-such-workload"],
    ["why", "-u", "-s", "1000", "127.0.0.1:9"],
    ["why", "-s", "-1", "127.0.0.1:9"],
    ["lab", "scenario", "no-such-scenario"],
]
ENV_CASES = [
    ({"PYPROBE_RINGBUF_PAGES": "abc"}, ["tcpstates", "-d", "1"]),
    ({"PYPROBE_RINGBUF_PAGES": "-4"}, ["drops", "--stream", "-d", "1"]),
    ({"PYPROBE_MAP_ENTRIES": "netdev.devices=lots"}, ["netdev", "1", "1"]),
    ({"PYPROBE_MAP_ENTRIES": "netdev.nomap=4"}, ["netdev", "1", "1"]),
    ({"PYPROBE_MAP_ENTRIES": "netdev.devices=0"}, ["netdev", "1", "1"]),
    ({"PYPROBE_MAP_ENTRIES": "netdev.devices_front=3"}, ["netdev", "1", "1"]),
]


def run(capsys, argv: list[str]) -> tuple[int, list[str]]:
    # Each case must be refused at once: one that would run (say, an interval
    # of inf let through) is stopped and fails here instead of hanging the suite.
    def too_long(signum, frame):
        raise TimeoutError(f"{argv} still running after {LIMIT} s")

    previous = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(LIMIT)
    try:
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    err = capsys.readouterr().err
    return exit_.value.code, err.strip().splitlines()


def check(capsys, argv: list[str]) -> None:
    before = bpf_prog_count()
    code, lines = run(capsys, argv)
    assert code == 2, (argv, code, lines)
    assert len(lines) == 1 and lines[0].startswith(("pyprobe: error: ", "Error: ")), (argv, lines)
    assert "Traceback" not in lines[0]
    assert bpf_prog_count() == before, argv


@pytest.mark.parametrize("argv", CASES, ids=[" ".join(a)[:40] for a in CASES])
def test_absurd_arguments(capsys, argv):
    check(capsys, argv)


@pytest.mark.parametrize(("env", "argv"), ENV_CASES, ids=[str(e) for e, _ in ENV_CASES])
def test_malformed_environment(capsys, monkeypatch, env, argv):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    check(capsys, argv)
