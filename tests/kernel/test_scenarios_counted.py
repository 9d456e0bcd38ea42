"""`pyprobe lab scenario`'s numbers against the kernel's own: each count a
verdict says, read where the kernel keeps it (nft's rule counters, the
namespace's nstat) while the scenario's lab is still up (at its verdict)."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import click
import pytest

from pyprobe import cli
from pyprobe.cli.common import Context
from pyprobe.cli.lab import run_scenario
from pyprobe.lab import scenarios, topology
from pyprobe.netns.namespaces import NETNS_RUN_DIR
from tests.kernel.test_lab import lab_namespaces
from tests.kernel.test_why_scenarios import netstat

pytestmark = [pytest.mark.root, pytest.mark.kernel]


@pytest.fixture(autouse=True)
def no_other_lab():
    """Not while another lab is up or coming up: the scenario would take it down."""
    if topology.active() is not None or list(NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*")):
        pytest.skip("a lab is up or coming up (another test's)")


def nft_counters(short: str) -> list[int]:
    """The packets of every rule counter in the namespace's ruleset."""
    out = subprocess.run(
        ["ip", "netns", "exec", topology.ns_name(short), "nft", "-j", "list", "ruleset"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return [
        expr["counter"]["packets"]
        for item in json.loads(out)["nftables"]
        for expr in item.get("rule", {}).get("expr", [])
        if "counter" in expr
    ]


def counted_at_verdict(monkeypatch, name: str, read) -> tuple[str | None, dict]:
    """The scenario run, with read() called in its lab at its verdict."""
    seen: dict = {}
    s = scenarios.SCENARIOS[name]

    def verdict(ev):
        seen.update(read())
        return s.verdict(ev)

    monkeypatch.setitem(scenarios.SCENARIOS, name, dataclasses.replace(s, verdict=verdict))
    with click.Context(cli.cli, obj=Context()):
        said, _ = run_scenario(name)
    assert lab_namespaces() == []
    return said, seen


def test_vxlan_mtu_icmp_dropped_and_retransmits_as_the_kernel_counts(monkeypatch):
    said, seen = counted_at_verdict(
        monkeypatch,
        "vxlan-mtu",
        lambda: {"nft": nft_counters("h1"), "nstat": netstat("h1")},
    )
    (dropped,) = seen["nft"]  # h1's one rule: ICMP fragmentation needed, dropped
    retransmitted = seen["nstat"]["TcpRetransSegs"]
    assert dropped > 0 and retransmitted > 0, seen
    # the ICMP never reached ICMP's receive path (netfilter drops it before)
    assert seen["nstat"]["IcmpInDestUnreachs"] == 0
    assert said == (
        f"MTU black hole from pplab-h1 to 10.231.4.2: {dropped} ICMP errors from 10.231.4.2 "
        "dropped by netfilter on eth0 in pplab-h1 (drops NETFILTER_DROP), "
        f"{retransmitted} segments to 10.231.4.2:8085 retransmitted (tcpretrans): packets too "
        "big for the path vanish and the ICMP fragmentation needed that says so never arrives "
        "(eth0's MTU 1500: what the sender still believes the path carries)"
    )
