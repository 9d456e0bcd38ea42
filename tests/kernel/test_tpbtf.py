"""tp_btf: bcc's compiled programs loaded as BTF-typed raw tracepoints
(pyprobe/tpbtf.py), beside the raw_tracepoint programs they replace."""

from __future__ import annotations

import dataclasses
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from pyprobe.kernel.env import KernelEnv
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import devices
from tests.support import registry

PROBE_READ_KERNEL = 113  # BPF_FUNC_probe_read_kernel
PROG_TYPE_TRACING = 26


@pytest.fixture
def pair():
    with VethPair(prefix=f"pt{time.monotonic_ns() % 100000}", net=79) as p:
        yield p


def sh(ns: str, cmd: str) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *cmd.split()], capture_output=True, check=True)


def raw_env() -> KernelEnv:
    """This machine with tp_btf ruled out: the raw_tracepoint hooks."""
    env = KernelEnv.detect()
    return dataclasses.replace(env, disabled_hooks=env.disabled_hooks | {"tp_btf"})


def helper_calls(insns: bytes, helper: int) -> int:
    return sum(
        1
        for i in range(0, len(insns), 8)
        if insns[i] == 0x85 and int.from_bytes(insns[i + 4 : i + 8], "little") == helper
    )


def prog_type(fd: int) -> int:
    info = Path(f"/proc/self/fdinfo/{fd}").read_text()
    return int(next(ln.split()[1] for ln in info.splitlines() if ln.startswith("prog_type:")))


def test_members_are_loads_not_helper_calls(env, no_programs_left):
    with (
        registry.create("netdev", env=env) as fast,
        registry.create("netdev", env=raw_env()) as raw,
    ):
        fast.attach()
        raw.attach()
        assert fast.hook.kind == "tp_btf" and raw.hook.kind == "raw_tracepoint"
        for fn in ("on_receive", "on_xmit", "on_queue"):
            # The same C function: through the helper as a raw tracepoint,
            # one load per member as tp_btf.
            assert helper_calls(raw.program.bpf.dump_func(fn.encode()), PROBE_READ_KERNEL) >= 2
            assert helper_calls(fast.program.bpf.dump_func(fn.encode()), PROBE_READ_KERNEL) == 0
        fds = fast.program.program_fds()
        assert {prog_type(fds[fn]) for fn in ("on_receive", "on_xmit", "on_queue")} == {
            PROG_TYPE_TRACING
        }


@pytest.mark.parametrize("name", ["netdev", "napi", "drops", "tcpretrans", "tcpstates"])
def test_tp_btf_counts_exactly_what_raw_tracepoint_counts(name, pair, env, no_programs_left):
    """Both variants attached over the same traffic (churn, refused connects,
    a UDP flood through NAPI): every series of our namespaces equal, each
    streamed event equal, the device counters equal to the device's own."""
    sh(pair.b, f"ethtool -K {pair.dev_b} gro on")  # veth delivers through NAPI
    sh(pair.a, f"ethtool -K {pair.dev_a} tso off")
    ours = {str(pair.inode(pair.a)), str(pair.inode(pair.b))}
    with registry.create(name, env=env) as fast, registry.create(name, env=raw_env()) as raw:
        stream = fast.manifest.event is not None
        fast.attach(stream=stream)
        raw.attach(stream=stream)
        assert fast.hook.kind == "tp_btf" and raw.hook.kind == "raw_tracepoint"
        before = devices.link_stats(pair.path(pair.b))[pair.dev_b]["rx_packets"]
        srv = traffic.Server(pair.path(pair.b), pair.addr_b, 7600)
        try:
            assert traffic.churn(pair.path(pair.a), pair.addr_b, 7600, 40) == 40
        finally:
            srv.stop()
        assert traffic.refused(pair.path(pair.a), pair.addr_b, 7602, 20) == 20
        traffic.udp_blast(pair.path(pair.a), pair.addr_b, 7601, 300, size=900)
        time.sleep(0.1)
        received = devices.link_stats(pair.path(pair.b))[pair.dev_b]["rx_packets"] - before

        # A time histogram's count is exact; its sum and buckets are two clock
        # reads, never equal between two programs.
        timed = ("sum", "buckets", "p50", "p99")

        def series(probe) -> dict:
            return {
                tuple(
                    sorted(
                        (k, str(v))
                        for k, v in r.items()
                        if k != "value" and not (k in timed and r["metric"].endswith("_seconds"))
                    )
                ): r.get("value")
                for r in probe.rows()
                if r.get("netns", "-") in ours
            }

        def events(probe) -> Counter:
            got = probe.events(timeout_ms=200) if stream else []
            return Counter(
                tuple(
                    sorted(
                        (k, str(v))
                        for k, v in e.items()
                        if k not in ("ts_ns", "ms", "life_ms", "time")
                    )
                )
                for e in got
                if str(e.get("netns")) in ours
            )

        got, want = series(fast), series(raw)
        got_events, want_events = events(fast), events(raw)
        assert fast.lost() == 0 and raw.lost() == 0 if stream else True
    assert got == want and len(got) >= (2 if name != "tcpstates" else 0)
    assert got_events == want_events
    if name == "tcpstates":
        assert sum(got_events.values()) >= 40 * 9  # each connection: 9 or 10 changes
    if name == "netdev":
        rx = {k: v for k, v in got.items() if ("metric", "netdev_receive_packets_total") in k}
        assert rx[next(k for k in rx if ("device", pair.dev_b) in k)] == received
