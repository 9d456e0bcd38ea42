"""The kprobe fallbacks, attached for real and checked against the kernel's own
counts. Runs inside the qemu VM (`make vm-test`: Debian's kernel has kprobes,
this machine's does not), with every tracepoint hook disabled."""

from __future__ import annotations

import os
import time
from collections import Counter
from pathlib import Path

import pytest

from pyprobe.core.attach import attach_together
from pyprobe.kernel.env import KernelEnv
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.load.compilers import CompilerLoader
from pyprobe.netns import namespaces
from tests.support import registry

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        os.environ.get("PYPROBE_VM") != "1", reason="runs inside the VM: make vm-test"
    ),
]
N = 30
REFUSED = 10
RCV = {"tcp_v4_rcv", "tcp_v6_rcv"}


def refused_syn(reasons: bool, drop: dict) -> bool:
    """A SYN to a closed port: NO_SOCKET where the kernel gives reasons (5.17+);
    before that (5.10 in the Vagrant box) a drop with no reason in tcp_v*_rcv."""
    if reasons:
        return drop["reason"] == "NO_SOCKET"
    return drop["location"].partition("+")[0] in RCV


def snmp(ns_path) -> dict[str, int]:
    def read() -> dict[str, int]:
        lines = [
            ln.split()
            for ln in Path("/proc/thread-self/net/snmp").read_text().splitlines()
            if ln.startswith("Tcp:")
        ]
        return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))

    return namespaces.run_in_netns(ns_path, read)


@pytest.fixture(scope="module")
def run():
    # Only while this module loads its probes: set for good, it outlived the
    # module, and in one pytest run of tests/vm then tests/kernel (the Vagrant
    # box's default suite) every later probe got the kprobe fallback, whose
    # tcp_set_state never sees CLOSE->LISTEN or LISTEN->SYN_RECV: five
    # tcpstates tests failed on 6.1, which fires both on its tracepoint.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PYPROBE_DISABLE_HOOKS", "raw_tracepoint,tracepoint")
        result = collect()
    print(f"kprobe hooks {result['hooks']}, compiled and attached in {result['compile_s']:.0f}s")
    yield result


def collect() -> dict:
    env = KernelEnv.detect()
    assert env.kprobes, "this VM's kernel should have kprobes"
    reasons = "reason" in env.tracepoint_fields("skb:kfree_skb")
    # Loaded as the CLI loads streams: compiled and attached in a compiler
    # process, which hands back the kprobes' perf event fds and the ring
    # buffer's, then exits (load/compilers.py).
    loader = CompilerLoader()
    probes = {n: registry.create(n, env=env, loader=loader) for n in ("tcpstates", "drops")}
    hooks = {}
    with VethPair(prefix="vm", net=31) as pair:
        start = time.monotonic()
        try:
            errors = attach_together(probes, loader, streams=list(probes))
        finally:
            loader.close()  # the children are gone from here on
        assert not errors, errors
        hooks = {name: p.hook_label for name, p in probes.items()}
        compile_s = time.monotonic() - start
        srv = traffic.Server(pair.path(pair.a), pair.addr_a, 8080)
        done = traffic.churn(pair.path(pair.b), pair.addr_a, 8080, N)
        refused = traffic.refused(pair.path(pair.b), pair.addr_a, 8082, REFUSED)
        time.sleep(0.5)
        srv.stop()
        events = {name: p.events(timeout_ms=300) for name, p in probes.items()}
        result = {
            "srv": pair.inode(pair.a),
            "cli": pair.inode(pair.b),
            "hooks": hooks,
            "compile_s": compile_s,
            "done": done,
            "refused": refused,
            "events": events,
            "transitions": probes["tcpstates"].transitions(),
            "drops": probes["drops"].rows(),
            "snmp": {"cli": snmp(pair.path(pair.b)), "srv": snmp(pair.path(pair.a))},
            "lost": {n: p.lost() for n, p in probes.items()},
            "reasons": reasons,
        }
        for p in probes.values():
            p.detach()
    return result


def test_the_kprobe_hooks_are_the_ones_attached(run):
    assert run["hooks"]["tcpstates"].startswith("kprobe:tcp_set_state")
    assert run["hooks"]["drops"].startswith("kprobe:kfree_skb")
    assert run["done"] == N and run["refused"] == REFUSED
    assert run["lost"] == {"tcpstates": 0, "drops": 0}


def test_tcpstates_kprobe_counts_equal_snmp(run):
    cli = run["cli"]
    client = Counter(
        (e["oldstate"], e["newstate"]) for e in run["events"]["tcpstates"] if e["netns"] == cli
    )
    snmp_cli = run["snmp"]["cli"]
    assert client[("CLOSE", "SYN_SENT")] == snmp_cli["ActiveOpens"] == N + REFUSED
    assert client[("SYN_SENT", "ESTABLISHED")] == N
    assert client[("SYN_SENT", "CLOSE")] == snmp_cli["AttemptFails"] == REFUSED
    assert client[("ESTABLISHED", "FIN_WAIT1")] == N
    # the in-kernel counters agree with the stream
    assert run["transitions"][("CLOSE", "SYN_SENT")] >= N + REFUSED


def test_drops_kprobe_sees_each_refused_syn(run):
    srv = str(run["srv"])
    reasons = run["reasons"]
    no_socket = sum(
        r["value"] for r in run["drops"] if refused_syn(reasons, r) and r["netns"] == srv
    )
    assert no_socket == REFUSED
    stream = [e for e in run["events"]["drops"] if refused_syn(reasons, e) and e["dport"] == 8082]
    assert len(stream) == REFUSED
    assert {e["location"].partition("+")[0] for e in stream} <= RCV
