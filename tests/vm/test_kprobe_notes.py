"""The kprobe fallbacks of the notes' probes (icmp: __icmp_send, kernels
before the icmp:icmp_send tracepoint; neigh: neigh_invalidate and
__neigh_update), attached for real in the VM with every tracepoint hook
disabled, and checked against the kernel's own counts."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pyprobe.kernel.env import KernelEnv
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from tests.support import registry

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        os.environ.get("PYPROBE_VM") != "1", reason="runs inside the VM: make vm-test"
    ),
]
N = 12


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("PYPROBE_DISABLE_HOOKS", "tp_btf,raw_tracepoint,tracepoint")
    env = KernelEnv.detect()
    assert env.kprobes
    return env


def out_type3(ns_path) -> int:
    def read() -> int:
        lines = [
            ln.split()
            for ln in Path("/proc/thread-self/net/snmp").read_text().splitlines()
            if ln.startswith("IcmpMsg:")
        ]
        if not lines:
            return 0
        return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True)).get("OutType3", 0)

    return namespaces.run_in_netns(ns_path, read)


def test_icmp_kprobe_counts_each_port_unreachable(env):
    with VethPair(prefix="vi", net=33) as pair:
        namespaces.run_in_netns(
            pair.path(pair.b),
            lambda: Path("/proc/sys/net/ipv4/icmp_ratelimit").write_text("0"),
        )
        probe = registry.create("icmp", env=env)
        with probe:
            probe.attach()
            assert probe.hook_label.startswith("kprobe:__icmp_send")
            before = out_type3(pair.path(pair.b))
            traffic.udp_blast(pair.path(pair.a), pair.addr_b, 9, N)
            time.sleep(0.3)
            sent = out_type3(pair.path(pair.b)) - before
            ns_b = str(pair.inode(pair.b))
            counted = sum(
                r["value"]
                for r in probe.rows()
                if r["metric"] == "icmp_errors_sent_total"
                and r["netns"] == ns_b
                and (r["type"], r["code"]) == ("DEST_UNREACH", "PORT_UNREACH")
            )
    assert sent == counted == N


def test_neigh_kprobes_count_failures_and_resolutions(env):
    with VethPair(prefix="vn", net=34) as pair:
        dev = pair.dev_a
        namespaces.run_in_netns(
            pair.path(pair.a),
            lambda: [
                Path(f"/proc/sys/net/ipv4/neigh/{dev}/{k}").write_text(v)
                for k, v in (("retrans_time_ms", "100"), ("mcast_solicit", "2"))
            ],
        )
        absent = [pair.addr_a.rsplit(".", 1)[0] + f".{200 + i}" for i in range(3)]
        probe = registry.create("neigh", env=env)
        with probe:
            probe.attach()
            assert probe.hook_label.startswith("kprobe:")
            for addr in [*absent, pair.addr_b]:
                traffic.udp_blast(pair.path(pair.a), addr, 9, 1)
            time.sleep(1.0)
            ns_a = str(pair.inode(pair.a))
            got = {
                r["event"]: r["value"]
                for r in probe.rows()
                if r["metric"] == "neigh_events_total" and r["netns"] == ns_a and r["device"] == dev
            }
    assert got.get("failed") == len(absent)
    assert got.get("resolved") == 1
