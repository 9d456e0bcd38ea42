"""What the kernel counts already, in procfs: read when asked (a scrape, a
report), at no cost to the workload in between. The running kernel's own
files, never a model of them: columns are read by their headers where the
file has headers. The host's procfs (--path.procfs) unless another is given."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import PyprobeError
from .host import host

USER_HZ = os.sysconf("SC_CLK_TCK")  # /proc/stat's unit (100 on Linux)


def _read(proc: Path | None, *parts: str) -> str:
    """A file of the host's procfs; one that cannot be read is a one-line
    error naming it (a --path.procfs that is not the host's procfs, say)."""
    path = (proc or host().procfs).joinpath(*parts)
    try:
        return path.read_text()
    except OSError as e:
        raise PyprobeError(f"cannot read {path}: {e.strerror} (--path.procfs)") from None


def softirqs(proc: Path | None = None) -> list[dict]:
    """/proc/softirqs: runs of each vector on each CPU (what the kernel
    counts in __do_softirq)."""
    lines = _read(proc, "softirqs").splitlines()
    cpus = [c.removeprefix("CPU") for c in lines[0].split()]
    out = []
    for line in lines[1:]:
        vector, _, counts = line.partition(":")
        for cpu, n in zip(cpus, counts.split(), strict=False):
            out.append({"cpu": cpu, "vector": vector.strip(), "value": int(n)})
    return out


def softirq_seconds(proc: Path | None = None) -> list[dict]:
    """/proc/stat: time each CPU spent in softirqs (its 7th column, in
    USER_HZ ticks; exact where the kernel has IRQ time accounting)."""
    out = []
    for line in _read(proc, "stat").splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu" and len(fields) >= 7:
            out.append({"cpu": name[3:], "value": int(fields[6]) / USER_HZ})
    return out


# /proc/net/softnet_stat's columns (net/core/net-procfs.c), all hex
SOFTNET = ("processed", "dropped", "time_squeeze")


def softnet(proc: Path | None = None) -> list[dict]:
    """/proc/net/softnet_stat: per CPU, packets the receive softirq
    processed, dropped (the backlog full) and the times it ran out of budget
    or time with work left (time_squeeze). A line per online CPU; its CPU
    is the 13th column where the kernel writes it (5.10+), else the line."""
    out = []
    for n, line in enumerate(_read(proc, "net", "softnet_stat").splitlines()):
        cols = [int(c, 16) for c in line.split()]
        cpu = cols[12] if len(cols) > 12 else n
        out.append({"cpu": str(cpu), **dict(zip(SOFTNET, cols, strict=False))})
    return out
