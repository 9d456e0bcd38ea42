"""On the VM's older kernel (Debian 12's 6.1 in the qemu VM; Debian 11's 5.10 in
the Vagrant box pyprobe/bookworm-5.10), with nothing disabled: each probe picks
the hook this kernel allows before loading, and counts right."""

from __future__ import annotations

import os
import time

import pytest

from pyprobe.kernel.env import KernelEnv
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from tests.support import registry
from tests.vm.test_kprobe_path import refused_syn

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(
        os.environ.get("PYPROBE_VM") != "1", reason="runs inside the VM: make vm-test"
    ),
]
N = 12


def test_fallbacks_chosen_for_an_older_kernel_count_right():
    env = KernelEnv.detect()
    env.disabled_hooks = frozenset()  # whatever PYPROBE_DISABLE_HOOKS says
    reasons = "reason" in env.tracepoint_fields("skb:kfree_skb")  # 5.17+
    drops = registry.create("drops", env=env)
    retrans = registry.create("tcpretrans", env=env)
    with VethPair(prefix="vo", net=32) as pair, drops, retrans:
        drops.attach()
        retrans.attach()
        srv = str(pair.inode(pair.a))
        assert traffic.refused(pair.path(pair.b), pair.addr_a, 8090, N) == N
        time.sleep(0.3)
        no_socket = sum(
            r["value"] for r in drops.rows() if refused_syn(reasons, r) and r["netns"] == srv
        )
        cli = str(pair.inode(pair.b))
        rows = retrans.rows()
        received = sum(
            r["value"]
            for r in rows
            if r["metric"] == "tcp_resets_received_total" and r["netns"] == cli
        )
        sent = sum(
            r["value"] for r in rows if r["metric"] == "tcp_resets_sent_total" and r["netns"] == srv
        )
        hooks = {"drops": drops.program.hook, "tcpretrans": retrans.program.hook}
    print({n: (h.label, h.cflags) for n, h in hooks.items()})
    if reasons:
        # 6.1: kfree_skb's raw tracepoint has a reason but no rx_sk (6.8+)
        assert hooks["drops"].kind == "raw_tracepoint"
        assert "-DRAW_TP_HAS_RX_SK" not in hooks["drops"].cflags
    else:
        # before 5.17 (5.10): the tracepoint, which has no reason there
        assert hooks["drops"].kind == "tracepoint"
        assert "-DHOOK_TP_NOREASON" in hooks["drops"].cflags
    # 6.1: tcp_send_reset has no reason argument (6.10+)
    assert hooks["tcpretrans"].kind == "raw_tracepoint"
    assert "-DRESET_HAS_REASON" not in hooks["tcpretrans"].cflags
    assert no_socket == N
    assert received == N
    # Before 6.10, tcp_send_reset fires only for a reset sent by a socket; the
    # resets a closed port answers with (no socket) are not traced there.
    assert sent == 0


def test_every_probe_attaches_with_the_hook_it_chose():
    """Each probe with hooks, with nothing disabled: the hook chosen before
    loading is one this kernel's verifier takes (napi's tp_btf was refused
    by 6.1's: an index bound it could not see)."""
    env = KernelEnv.detect()
    env.disabled_hooks = frozenset()
    refused = {}
    for name in registry.names():
        probe = registry.create(name, env=env)
        if not probe.manifest.hooks:
            continue  # the kernel's counters alone
        with probe:
            try:
                probe.attach()
            except Exception as e:  # what it was is the finding
                refused[name] = str(e)[-300:]
    assert not refused, refused
