"""The floor: programs that do nothing, on every hook the exporter attaches
with every probe (the same points it would choose here, found the way it
finds them).

Two things are read off this arm. Its throughput is what those hooks cost
with nothing in them (the tracepoint dispatch): the exporter with every
probe cannot do better than this row. And its ns/run: kernel.bpf_stats_enabled
times every run with two clock reads around the program; on a VM those reads
are not free, so what an empty program "costs" per run is that accounting
and the dispatch; a probe's own work is its ns/run minus this. A bench arm
(bench/arms.py runs `python -m bench.floor`); runs until SIGINT.
"""

from __future__ import annotations

import signal
import sys

from bcc import BPF

from pyprobe.probes import default


def hooks() -> list[str]:
    """Every raw tracepoint the exporter's probes attach here, once each."""
    found: list[str] = []
    registry = default()
    for name in registry.names():
        probe = registry.create(name, features=["all"])  # every hook the probe has
        if not probe.needs_program():
            continue
        for point in probe.load_request().hook.points:
            if point.target not in found:
                found.append(point.target)
    return found


def names(targets: list[str]) -> list[str]:
    """Program names the kernel keeps whole (15 characters), one per hook."""
    out: list[str] = []
    for i, target in enumerate(targets):
        name = f"f_{target}"[:15]
        out.append(name if name not in out else f"{name[:12]}_{i:02d}")
    return out


def source(fns: list[str]) -> bytes:
    """An empty program for each name."""
    return "\n".join(f"int {fn}(void *ctx) {{ return 0; }}" for fn in fns).encode()


def attach() -> tuple[BPF, list[str]]:
    """The empty programs, attached: what owns them, and their hooks."""
    targets = hooks()
    fns = names(targets)
    bpf = BPF(text=source(fns))
    for target, fn in zip(targets, fns, strict=True):
        bpf.attach_raw_tracepoint(tp=target.encode(), fn_name=fn.encode())
    return bpf, targets


def main() -> None:
    bpf, targets = attach()
    print(f"attached {len(targets)}: {' '.join(targets)}", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        bpf.cleanup()


if __name__ == "__main__":
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    sys.exit(main())
