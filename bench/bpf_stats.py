"""BPF run time per probe program under traffic (kernel.bpf_stats_enabled).

Attaches every probe (counters; with --stream, the streaming variants too),
drives connection churn and a UDP flood across a veth pair between two
namespaces, and prints ns/run and runs for each program, from `bpftool prog
show -j`. A measurement for the notes and bench/, not a test.

    .venv/bin/python bench/bpf_stats.py [--stream] [--seconds N]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path

from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.load.bcc import BccLoader
from pyprobe.probes import default

STATS = Path("/proc/sys/kernel/bpf_stats_enabled")


def progs() -> dict[int, dict]:
    out = subprocess.run(["bpftool", "prog", "show", "-j"], capture_output=True, text=True)
    return {p["id"]: p for p in json.loads(out.stdout or "[]")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--connections", type=int, default=2000)
    args = ap.parse_args()
    old = STATS.read_text().strip()
    STATS.write_text("1")
    owners: dict[int, str] = {}
    probes = []
    try:
        with VethPair(prefix="ppbench", net=90) as pair:
            for name in default().names():
                before = set(progs())
                p = default().create(name, loader=BccLoader())
                stream = args.stream and p.manifest.event is not None
                p.attach(stream=stream)
                probes.append(p)
                for pid in set(progs()) - before:
                    owners[pid] = name + (" (stream)" if stream else "")
            srv = traffic.Server(pair.path(pair.b), pair.addr_b, 9000)
            start = time.monotonic()
            done = traffic.churn(pair.path(pair.a), pair.addr_b, 9000, args.connections)
            sent = traffic.udp_blast(pair.path(pair.a), pair.addr_b, 9001, 20000, size=200)
            elapsed = time.monotonic() - start
            srv.stop()
            for p in probes:
                p.events(timeout_ms=0) if p.streaming else None
            stats = progs()
            for p in probes:
                p.detach()
    finally:
        STATS.write_text(old)
    print(f"{done} connections + {sent} datagrams in {elapsed:.1f}s")
    print(f"{'PROBE':<22} {'PROGRAM':<18} {'RUNS':>10} {'NS/RUN':>8}")
    for pid, name in sorted(owners.items(), key=lambda kv: kv[1]):
        prog = stats.get(pid, {})
        runs, ns = prog.get("run_cnt", 0), prog.get("run_time_ns", 0)
        per = ns / runs if runs else 0
        print(f"{name:<22} {prog.get('name', '?'):<18} {runs:>10} {per:>8.0f}")


if __name__ == "__main__":
    main()
