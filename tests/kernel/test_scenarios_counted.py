"""`pyprobe lab scenario`'s numbers against the kernel's own: each count a
verdict says, read where the kernel keeps it (nft's rule counters, the
namespace's nstat) while the scenario's lab is still up (at its verdict)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import click
import pytest

from pyprobe import cli
from pyprobe.cli.common import Context
from pyprobe.cli.lab import run_scenario
from pyprobe.errors import PyprobeError
from pyprobe.lab import scenarios, topology
from pyprobe.netns.namespaces import NETNS_RUN_DIR, run_in_netns
from tests.kernel.test_lab import lab_namespaces
from tests.kernel.test_why_scenarios import netstat

pytestmark = [pytest.mark.root, pytest.mark.kernel]


@pytest.fixture(autouse=True)
def no_other_lab():
    """Never beside another lab (the scenario would take it down): refused, not skipped."""
    if topology.active() is not None or list(NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*")):
        pytest.fail("a lab is up: another test left it, or another run shares this machine")


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
        "big for the path vanish and the ICMP that would say so (fragmentation needed) never "
        "arrives (eth0's MTU 1500: what the sender still believes the path carries)"
    )


def conntrack_stat(short: str) -> dict[str, int]:
    """The namespace's /proc/net/stat/nf_conntrack (`conntrack -S`), summed
    over CPUs (entries is one count, on every line), and its count."""

    def read() -> dict[str, int]:
        lines = Path("/proc/thread-self/net/stat/nf_conntrack").read_text().splitlines()
        header, out = lines[0].split(), {}
        for line in lines[1:]:
            for k, v in zip(header, line.split(), strict=True):
                out[k] = int(v, 16) if k == "entries" else out.get(k, 0) + int(v, 16)
        out["count"] = int(Path("/proc/sys/net/netfilter/nf_conntrack_count").read_text())
        return out

    return run_in_netns(topology.ns_path(short), read)


def test_conntrack_full_counts_as_the_kernel_and_the_limit_put_back(monkeypatch):
    before = int(topology.CONNTRACK_MAX.read_text())
    said, seen = counted_at_verdict(
        monkeypatch,
        "conntrack-full",
        lambda: {
            "stat": conntrack_stat("rt"),
            "max": int(topology.CONNTRACK_MAX.read_text()),
            "saved": topology.active()["conntrack_max"],
        },
    )
    stat = seen["stat"]
    assert seen["max"] == scenarios.CT_LIMIT and seen["saved"] == before
    assert stat["count"] == stat["entries"] == scenarios.CT_LIMIT, stat
    # each new flow's one datagram: no entry, dropped (no unassured entry to evict)
    assert stat["drop"] == scenarios.CT_FLOWS and stat["early_drop"] == 0, stat
    assert said == (
        f"conntrack table full in pplab-rt: 64/64 entries (nf_conntrack_max), "
        f"{stat['drop']} new connections dropped (conntrack), {scenarios.CT_FLOWS} packets "
        "dropped NETFILTER_DROP there (drops)"
    )
    assert int(topology.CONNTRACK_MAX.read_text()) == before


def test_conntrack_full_not_run_when_a_namespace_holds_more(monkeypatch):
    """The limit is the host's: with any namespace holding more than half of
    it, the scenario refuses and the limit is not touched."""
    before = int(topology.CONNTRACK_MAX.read_text())
    monkeypatch.setattr(scenarios, "_ct_counts", lambda: {4026531840: 40})
    with click.Context(cli.cli, obj=Context()), pytest.raises(PyprobeError) as e:
        run_scenario("conntrack-full")
    assert "tracks 40 connections" in str(e.value) and "not run" in str(e.value)
    assert int(topology.CONNTRACK_MAX.read_text()) == before
    assert lab_namespaces() == []


def test_lab_down_puts_the_conntrack_limit_back():
    """A scenario that could not put it back (killed): `lab down` does, from
    the lab's description. (Lowered by one here: harmless.)"""
    before = int(topology.CONNTRACK_MAX.read_text())
    topology.Lab("veth").up()
    try:
        topology.remember("conntrack_max", before)
        topology.CONNTRACK_MAX.write_text(str(before - 1))
    finally:
        topology.down()
    assert int(topology.CONNTRACK_MAX.read_text()) == before
    assert topology.active() is None
