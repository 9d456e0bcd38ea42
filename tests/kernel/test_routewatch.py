"""route-changes: each route and rule added and removed in a namespace, in
order, as `ip` made them — through the API and the command."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

import pytest

from pyprobe.lab.pair import VethPair
from pyprobe.netns import routewatch
from tests.kernel.test_cli_kernel import PYPROBE

pytestmark = [pytest.mark.root, pytest.mark.kernel]

CHANGES = [
    ("route add blackhole 10.55.0.0/16", ("add", "route", "blackhole", "10.55.0.0/16")),
    ("route add 10.57.0.0/16 via {gw}", ("add", "route", "unicast", "10.57.0.0/16")),
    ("rule add from 10.56.0.0/16 table 100 prio 1000", ("add", "rule", "to_tbl", "10.56.0.0/16")),
    ("route del blackhole 10.55.0.0/16", ("del", "route", "blackhole", "10.55.0.0/16")),
    ("rule del from 10.56.0.0/16 table 100 prio 1000", ("del", "rule", "to_tbl", "10.56.0.0/16")),
]


def make_changes(pair: VethPair) -> None:
    for cmd, _ in CHANGES:
        subprocess.run(["ip", "-n", pair.a, *cmd.format(gw=pair.addr_b).split()], check=True)


def seen(c: dict) -> tuple:
    what = c["type"] if c["kind"] == "route" else c["action"]
    return (c["event"], c["kind"], what, c["dst"] if c["kind"] == "route" else c["src"])


def test_each_change_in_order_with_its_table_and_device():
    with VethPair(prefix=f"rw{time.monotonic_ns() % 100000}", net=87) as pair:
        out: queue.Queue = queue.Queue()
        stop = threading.Event()
        threads = routewatch.watch({pair.inode(pair.a): pair.path(pair.a)}, out, stop)
        assert all(t.ready.wait(2) for t in threads)  # type: ignore[attr-defined]
        make_changes(pair)
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(2)
            assert not t.is_alive()
        got = []
        while not out.empty():
            inode, _, c = out.get()
            assert inode == pair.inode(pair.a)
            got.append(c)
    assert [seen(c) for c in got] == [want for _, want in CHANGES]
    via = got[1]
    assert (via["gateway"], via["dev"], via["table"], via["proto"]) == (
        pair.addr_b, pair.dev_a, "main", "boot"
    )  # fmt: skip
    assert (got[2]["table"], got[2]["priority"]) == ("100", 1000)


def test_the_command_streams_them_as_ndjson():
    with VethPair(prefix=f"rx{time.monotonic_ns() % 100000}", net=88) as pair:
        proc = subprocess.Popen(
            [PYPROBE, "route-changes", "--netns", pair.a, "-j", "-d", "3"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stderr is not None and "Watching" in proc.stderr.readline()
        make_changes(pair)
        out, _ = proc.communicate(timeout=20)
        inode = pair.inode(pair.a)
    assert proc.returncode == 0
    lines = [json.loads(ln) for ln in out.splitlines()]
    assert [seen(c) for c in lines] == [want for _, want in CHANGES]
    assert {c["netns"] for c in lines} == {inode}
