"""Faults, floods and hostile input (issue 8): run alone with
`make test-faults` (pytest -m faults); part of `make test` too, except the
30-minute soak (`make soak`)."""

from __future__ import annotations

import os
import subprocess

import pytest

from pyprobe.lab.pair import VethPair
from tests.support import churn_binary, first_line


def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="session")
def churn() -> str:
    return churn_binary()


@pytest.fixture
def pair():
    with VethPair(prefix=f"pf{os.getpid()}", net=14) as p:
        yield p


def in_netns(path, *argv: str, user: str | None = None) -> list[str]:
    """argv run inside a namespace (nsenter), optionally as an unprivileged user."""
    cmd = ["nsenter", f"--net={path}", "--"]
    if user:
        cmd += ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups"]
    return [*cmd, *argv]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class ManySockets:
    """n live TCP sockets (n/2 connections from ns a to ns b), held by helper
    processes (bench/scrape.py --hold) under the per-process fd limit."""

    PER_WORKER = 9000

    def __init__(self, pair, sockets: int, port: int = 9100) -> None:
        import sys
        from pathlib import Path

        from pyprobe.netns import namespaces
        from tests.support import ROOT

        namespaces.run_in_netns(
            pair.path(pair.a),
            lambda: Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("1024 65535"),
        )
        n = sockets // 2
        self.workers = []
        for k, start in enumerate(range(0, n, self.PER_WORKER)):
            count = min(self.PER_WORKER, n - start)
            self.workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "bench" / "scrape.py"),
                        "--hold",
                        pair.a,
                        pair.b,
                        pair.addr_b,
                        str(port + k),
                        str(count),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for w in self.workers:
            # bounded: a worker stuck opening its sockets fails the test, not the suite
            assert first_line(w, w.stdout, what="ready").strip() == "ready"

    def close(self) -> None:
        for w in self.workers:
            w.communicate(timeout=60)

    def __enter__(self) -> ManySockets:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
