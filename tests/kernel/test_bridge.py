"""fdb and `pyprobe bridge` on the bridge lab: every address learned once
per port as `bridge fdb` lists it, a MAC taken over by another host counted
as one move from its old port to its new one, a flush as one deletion per
learned entry; `pyprobe bridge` lists the same table."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from pyprobe import cli
from pyprobe.lab import topology
from tests.kernel.test_lab import clean, lab_namespaces  # noqa: F401 (the fixture)
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def sh(ns: str, cmd: str) -> str:
    return subprocess.run(
        ["ip", "netns", "exec", topology.ns_name(ns), "sh", "-c", cmd],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def learned_by_port() -> dict[str, set[str]]:
    """`bridge fdb show`'s learned entries (dynamic: not permanent nor static)."""
    out: dict[str, set[str]] = {}
    for line in sh("sw", "bridge fdb show br br0").splitlines():
        f = line.split()
        if "permanent" in f or "static" in f or "master" not in f:
            continue
        out.setdefault(f[f.index("dev") + 1], set()).add(f[0])
    return out


def counts(probe) -> dict[tuple[str, str], float]:
    return {
        (r["port"], r["event"]): r["value"]
        for r in probe.rows()
        if r["metric"] == "bridge_fdb_events_total" and r["netns_name"] == "pplab-sw"
    }


def test_learning_moves_and_flushes_are_counted_as_bridge_fdb_shows_them(capsys, env):
    probe = registry.create("fdb", env=env)
    with probe:
        probe.attach(stream=True)
        with topology.Lab("bridge"):
            for n in (2, 3):
                sh("h1", f"ping -c1 -W2 10.231.2.{n}")
            time.sleep(0.1)
            table = learned_by_port()
            got = counts(probe)
            assert set(table) == {"port1", "port2", "port3"}
            for port, macs in table.items():
                assert got[(port, "learned")] == len(macs)
            # `pyprobe bridge` lists the same learned entries
            cli.main(["bridge", "-j", "--netns", "pplab-sw"])
            listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
            assert {(r["port"], r["mac"]) for r in listed} == {
                (port, mac) for port, macs in table.items() for mac in macs
            }
            assert {r["stp_state"] for r in listed} == {"forwarding"}

            # h3 takes h1's address: the bridge moves it from port1 to port3
            h1_mac = sh("h1", "cat /sys/class/net/eth0/address").strip()
            sh("h3", f"ip link set eth0 address {h1_mac}")
            sh("h3", "ping -c1 -W2 10.231.2.2")
            time.sleep(0.1)
            assert counts(probe).get(("port3", "moved")) == 1
            assert learned_by_port()["port3"] >= {h1_mac}

            # a flush deletes every learned entry, one event each (the
            # bridge's own entries went before: its address followed its ports')
            def deleted() -> float:
                return sum(v for (_, event), v in counts(probe).items() if event == "deleted")

            before, learned = deleted(), sum(len(m) for m in learned_by_port().values())
            sh("sw", "ip link set br0 type bridge fdb_flush")
            time.sleep(0.1)
            assert deleted() - before == learned == 3
            events = probe.events(1000)
        assert probe.lost() == 0
    [moved] = [e for e in events if e["kind"] == "moved"]
    assert (moved["mac"], moved["old_port"], moved["port"], moved["bridge"]) == (
        h1_mac, "port1", "port3", "br0"
    )  # fmt: skip
    assert lab_namespaces() == []
