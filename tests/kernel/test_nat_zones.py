"""`pyprobe nat --zones`: connections per namespace and conntrack zone,
counted exactly: h2 puts the datagrams to port 9 in zone 1 and those to
port 10 in zone 2 (nft `ct zone set`, before conntrack sees them), each
from its own source port, so each is a connection; nft's rule counters and
the namespace's nf_conntrack_count are the kernel's own counts."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest

from pyprobe import cli
from pyprobe.lab import topology
from pyprobe.netns.namespaces import NETNS_RUN_DIR, run_in_netns
from tests.kernel.test_scenarios_counted import nft_counters

pytestmark = [pytest.mark.root, pytest.mark.kernel]

ZONES = """
table ip pyprobe_test_zones {
  chain pre {
    type filter hook prerouting priority raw; policy accept;
    udp dport 9 counter ct zone set 1
    udp dport 10 counter ct zone set 2
  }
}
"""


def flows(port: int, n: int) -> None:
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    for s in socks:
        s.sendto(b"z", ("10.231.1.2", port))
    for s in socks:
        s.close()


def test_entries_counted_by_zone(capsys):
    if topology.active() is not None or list(NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*")):
        pytest.fail("a lab is up: another test left it, or another run shares this machine")
    with topology.Lab("veth"):
        h2 = topology.ns_name("h2")
        subprocess.run(["ip", "netns", "exec", h2, "nft", "-f", "-"], input=ZONES, text=True,
                       check=True)  # fmt: skip
        run_in_netns(topology.ns_path("h1"), lambda: (flows(9, 3), flows(10, 5)))
        cli.main(["nat", "-z", "-j", "--netns", h2])
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        count = run_in_netns(
            topology.ns_path("h2"),
            lambda: int(Path("/proc/sys/net/netfilter/nf_conntrack_count").read_text()),
        )
        assert nft_counters("h2") == [3, 5]
        assert {r["zone"]: r["entries"] for r in rows} == {1: 3, 2: 5}
        assert {r["netns_name"] for r in rows} == {h2}
        assert sum(r["entries"] for r in rows) == count
