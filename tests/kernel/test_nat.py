"""The nat lab (a router masquerading its inside host and forwarding a port
to it): `pyprobe nat` shows each connection's mapping as conntrack holds it,
and the conntrack probe's counts are the namespace's own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyprobe import cli
from pyprobe.lab import topology, traffic
from pyprobe.netns import namespaces, snapshot
from tests.kernel.test_lab import clean, lab_namespaces  # noqa: F401 (the fixture)
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]

N, M = 6, 4


def nat_rows(capsys, *argv: str) -> list[dict]:
    cli.main(["nat", "-j", *argv])
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_nat_shows_each_mapping_and_conntrack_counts_the_tables(capsys, env):
    with topology.Lab("nat") as built:
        h1, h2 = built.hosts["h1"]["addr"], built.hosts["h2"]["addr"]
        wan = topology.NAT_ROUTER_WAN
        inside = traffic.Server(topology.ns_path("h1"), h1, topology.NAT_INSIDE_PORT)
        outside = traffic.Server(topology.ns_path("h2"), h2, 9000)
        try:
            # from outside to the forwarded port (DNAT), and from inside out (masquerade)
            assert traffic.churn(topology.ns_path("h2"), wan, topology.NAT_FORWARD_PORT, N) == N
            assert traffic.churn(topology.ns_path("h1"), h2, 9000, M) == M
        finally:
            inside.stop()
            outside.stop()
        rows = nat_rows(capsys, "--netns", topology.ns_name("rt"))
        assert {r["netns_name"] for r in rows} == {topology.ns_name("rt")}
        dnat = [r for r in rows if r["nat"] == "DNAT"]
        snat = [r for r in rows if r["nat"] == "SNAT"]
        assert len(dnat) == N and len(snat) == M and len(rows) == N + M
        for r in dnat:  # h2 -> rt:8080, answered by h1:80
            assert (r["proto"], r["orig_src"], r["orig_dst"], r["orig_dport"]) == (
                "tcp", h2, wan, topology.NAT_FORWARD_PORT
            )  # fmt: skip
            assert (r["reply_src"], r["reply_sport"], r["reply_dst"], r["reply_dport"]) == (
                h1, topology.NAT_INSIDE_PORT, h2, r["orig_sport"]
            )  # fmt: skip
        for r in snat:  # h1 -> h2:9000, answered to rt's own address
            assert (r["orig_src"], r["orig_dst"], r["orig_dport"]) == (h1, h2, 9000)
            assert (r["reply_src"], r["reply_sport"], r["reply_dst"]) == (h2, 9000, wan)
        # the inside host and the outside one track nothing NATed
        assert nat_rows(capsys, "--netns", topology.ns_name("h2")) == []

        probe = registry.create("conntrack", env=env)
        with probe:
            probe.attach()
            snapshot.expire()  # (a pass an earlier test took is not this lab's)
            assert probe.hook is None  # the kernel's counts: no program
            entries = {
                r["netns_name"]: r["value"]
                for r in probe.rows()
                if r["metric"] == "conntrack_entries"
            }
        count = namespaces.run_in_netns(
            topology.ns_path("rt"),
            lambda: int(Path("/proc/sys/net/netfilter/nf_conntrack_count").read_text()),
        )
        assert entries[topology.ns_name("rt")] == count == N + M
    assert lab_namespaces() == []
