"""What queues' acks feature costs: its tcp_probe program's runs/s and ns/run
under a loopback iperf3 stream (kernel.bpf_stats_enabled), beside an empty
program on the same raw tracepoint (the floor: dispatch and the stats' own
clock reads). Both are attached at once, so they see the same segments. A
measurement for the manifest's help text, not a test; safe on a shared
machine (loopback only, seconds long, the sysctl restored).

    .venv/bin/python -m bench.ack_rtt_cost [--seconds N] [--disable tp_btf]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time

from bcc import BPF

from bench.bpf_stats import STATS, progs
from pyprobe.kernel.env import KernelEnv
from pyprobe.load.bcc import BccLoader
from pyprobe.probes import default

PORT = 5317


def measure(seconds: float) -> tuple[dict[int, dict], dict[int, dict], float]:
    """bpftool's view of every program before and after an iperf3 stream."""
    server = subprocess.Popen(
        ["iperf3", "-s", "-1", "-p", str(PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        before, start = progs(), time.monotonic()
        subprocess.run(
            ["iperf3", "-c", "127.0.0.1", "-p", str(PORT), "-t", str(seconds)],
            stdout=subprocess.DEVNULL,
            check=True,
        )
        return before, progs(), time.monotonic() - start
    finally:
        server.kill()
        server.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--disable", default="", help="PYPROBE_DISABLE_HOOKS, to measure a fallback")
    args = ap.parse_args()
    os.environ["PYPROBE_DISABLE_HOOKS"] = args.disable
    old = STATS.read_text().strip()
    STATS.write_text("1")
    try:
        ids = set(progs())
        probe = default().create(
            "queues", env=KernelEnv.detect(), loader=BccLoader(), features=["acks"]
        )
        probe.attach()
        ours = [p for i, p in progs().items() if i not in ids and "tcp_probe" in p["name"]]
        floor = BPF(text=b"int f_tcp_probe(void *ctx) { return 0; }")
        floor.attach_raw_tracepoint(tp=b"tcp_probe", fn_name=b"f_tcp_probe")
        assert probe.hook is not None
        mine = {p["id"]: f"acks ({probe.hook.kind})" for p in ours}
        mine.update({i: "floor (empty)" for i, p in progs().items() if p["name"] == "f_tcp_probe"})
        before, after, elapsed = measure(args.seconds)
        floor.cleanup()
        probe.detach()
    finally:
        STATS.write_text(old)
    print(f"loopback iperf3, {elapsed:.1f} s")
    print(f"{'PROGRAM':<28} {'RUNS/S':>10} {'NS/RUN':>8}")
    for pid, name in mine.items():
        runs = after[pid].get("run_cnt", 0) - before[pid].get("run_cnt", 0)
        ns = after[pid].get("run_time_ns", 0) - before[pid].get("run_time_ns", 0)
        print(f"{name:<28} {runs / elapsed:>10.0f} {ns / runs if runs else 0:>8.0f}")


if __name__ == "__main__":
    main()
