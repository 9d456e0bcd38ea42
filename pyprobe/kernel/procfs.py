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


# The neighbour tables' own counters (net/core/neighbour.c neigh_stat_seq_show):
# one line per CPU, hex; "entries" is the table's, the same on every line.
NEIGH_TABLES = {"IPv4": "arp_cache", "IPv6": "ndisc_cache"}
NEIGH_SYSCTL = {"IPv4": "ipv4", "IPv6": "ipv6"}


def neigh_tables(proc: Path | None = None) -> list[dict]:
    """/proc/net/stat/{arp,ndisc}_cache summed over CPUs, per family: entries
    (every namespace's: the table is the kernel's, one for all), allocs,
    res_failed (resolutions that failed), table_fulls (forced GC found no
    room: the overflow one veth per sandbox hits); and the table's
    gc_thresh3, the hard limit (/proc/sys/net/*/neigh/default)."""
    proc = proc or host().procfs
    out = []
    for family, name in NEIGH_TABLES.items():
        try:
            lines = (proc / "net" / "stat" / name).read_text().splitlines()
            limit = proc / "sys" / "net" / NEIGH_SYSCTL[family] / "neigh" / "default" / "gc_thresh3"
            gc_thresh3 = int(limit.read_text())
        except FileNotFoundError:  # IPv6 off
            continue
        header = lines[0].split()
        totals = dict.fromkeys(header, 0)
        for line in lines[1:]:
            for key, value in zip(header, line.split(), strict=False):
                totals[key] = int(value, 16) if key == "entries" else totals[key] + int(value, 16)
        out.append({"family": family, **totals, "gc_thresh3": gc_thresh3})
    return out


# The calling thread's namespace's MIBs: /proc/thread-self/net shows the
# namespace of the thread reading it (a /proc/self/net would show the main
# thread's, whatever namespace this thread entered).
THREAD_NET = Path("/proc/thread-self/net")


def net_mibs(net: Path = THREAD_NET) -> dict[str, int]:
    """The namespace's SNMP counters as `nstat -az` names them (IpOutNoRoutes,
    Ip6OutNoRoutes, TcpRetransSegs...): /proc/net/snmp's header and value line
    pairs, and snmp6's name-value lines (absent with IPv6 off)."""
    out: dict[str, int] = {}
    lines = (net / "snmp").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        proto, _, keys = names.partition(":")
        for key, value in zip(keys.split(), values.partition(":")[2].split(), strict=False):
            out[proto + key] = int(value)
    try:
        for line in (net / "snmp6").read_text().splitlines():
            key, _, value = line.partition(" ")
            if value.strip():
                out[key] = int(value)
    except FileNotFoundError:
        pass
    return out


CONNTRACK_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")


def conntrack_stats(net: Path = THREAD_NET) -> dict[str, int] | None:
    """The calling thread's namespace's connection tracking as `conntrack -S`
    counts it: /proc/net/stat/nf_conntrack's columns by its header, summed
    over CPUs (entries, the table's size, is the namespace's one count);
    max_entries, the limit, is the host's (nf_conntrack_max). None where
    conntrack is not in the kernel."""
    try:
        lines = (net / "stat" / "nf_conntrack").read_text().splitlines()
    except FileNotFoundError:
        return None
    header = lines[0].split()
    out = dict.fromkeys(header, 0)
    for line in lines[1:]:
        for key, value in zip(header, line.split(), strict=False):
            out[key] = int(value, 16) if key == "entries" else out[key] + int(value, 16)
    try:
        out["max_entries"] = int(CONNTRACK_MAX.read_text())
    except OSError:  # not in every namespace on every kernel
        out["max_entries"] = 0
    return out
