"""The floor: programs that do nothing, on the hottest hooks pyprobe uses.

kernel.bpf_stats_enabled times every run with two clock reads around the
program; on a VM those reads are not free. What an empty program "costs" per
run is what that accounting and the raw tracepoint's dispatch cost; a
probe's own work is its ns/run minus this. A bench arm (bench/run.py); runs
until SIGINT.
"""

from __future__ import annotations

import signal
import sys

from bcc import BPF

HOOKS = ("inet_sock_set_state", "kfree_skb", "net_dev_xmit", "netif_receive_skb", "softirq_entry")


def name(hook: str) -> str:
    return "floor_" + hook[:9]  # BPF program names keep 15 characters


def main() -> None:
    text = "\n".join(f"int {name(h)}(void *ctx) {{ return 0; }}" for h in HOOKS)
    bpf = BPF(text=text.encode())
    for hook in HOOKS:
        bpf.attach_raw_tracepoint(tp=hook.encode(), fn_name=name(hook).encode())
    print("attached", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        bpf.cleanup()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
