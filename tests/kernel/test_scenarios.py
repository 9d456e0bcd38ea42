"""`pyprobe lab scenario`: each failure of the notes, built, broken and
driven, is named from what the probes saw — and is not, once the signal it
relies on is taken out of the evidence."""

from __future__ import annotations

import dataclasses
import json

import click
import pytest

from pyprobe import cli
from pyprobe.cli.common import Context
from pyprobe.cli.lab import run_scenario
from tests.kernel.test_lab import clean, lab_namespaces  # noqa: F401 (the fixture)

pytestmark = [pytest.mark.root, pytest.mark.kernel]

# scenario -> (what its verdict must say, the probe whose signal it names)
EXPECTED = {
    "neighbour": (
        ["no ARP reply from 10.231.1.77 on eth0 in pplab-h1", "3 packets dropped NEIGH_FAILED"],
        "neigh",
    ),
    "no-route": (
        ["no route to 10.231.1.0/24 in pplab-h1 (table main)", "3 lookups failed", "+3"],
        "routes",
    ),
    "closed-port": (
        ["no listener on 10.231.1.2:8083 in pplab-h2", "3 SYNs dropped NO_SOCKET", "3 resets"],
        "drops",
    ),
    "backlog": (["accept queue full on 10.231.1.2:8084 in pplab-h2", "listen overflows"], "queues"),
    "enslaved-ip": (
        ["an address on port1, a port of br0 in pplab-sw", "ARP for 10.231.2.2", "on br0"],
        "neigh",
    ),
    "stp-loop": (["STP blocks loop", "on br0 in pplab-sw", "BRIDGE_INGRESS_STP_STATE"], "drops"),
    "vxlan-mtu": (
        ["MTU black hole from pplab-h1 to 10.231.4.2", "dropped by netfilter on eth0", "MTU 1500"],
        "drops",
    ),
    "conntrack-full": (
        ["conntrack table full in pplab-rt: 64/64 entries", "new connections dropped"],
        "conntrack",
    ),
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_scenario_is_named_by_its_signal_and_not_without_it(name):
    from pyprobe.lab.scenarios import SCENARIOS

    with click.Context(cli.cli, obj=Context()):
        verdict, evidence = run_scenario(name)
    said, signal = EXPECTED[name]
    assert verdict is not None and all(s in verdict for s in said), (
        verdict,
        {
            k: [r for r in v if "pplab" in str(r.get("netns_name"))]
            for k, v in evidence.rows.items()
        },
    )
    without = dataclasses.replace(
        evidence,
        rows={k: v for k, v in evidence.rows.items() if k != signal},
        events={k: v for k, v in evidence.events.items() if k != signal},
    )
    assert SCENARIOS[name].verdict(without) is None
    assert lab_namespaces() == []


def test_the_command_says_it_in_one_line(capsys):
    cli.main(["lab", "scenario", "closed-port", "-j"])
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["verdict"].startswith("connect refused: no listener")
    assert lab_namespaces() == []
