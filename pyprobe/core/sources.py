"""Metrics the kernel already counts, by the source names manifests use
(`source = "softirqs"`): read when a scrape or a report asks, so they cost
the workload nothing between scrapes (node_exporter's way). A probe attaches
hooks only for what these do not give (drop reasons, time in state, NAPI
work per poll...).

Each source gives rows: label values as text, and numbers. max_age: how old
a pass through the namespaces may be to be shared (0: read now)."""

from __future__ import annotations

from collections.abc import Callable

from ..kernel import procfs
from ..netns import linkstats, snapshot
from ..netns.namespaces import named_netns

Row = dict[str, object]


SHARED_AGE = 0.5  # s: one scrape's collectors share one pass (netns/snapshot.py)


def devices(max_age: float = SHARED_AGE) -> list[Row]:
    """Every namespace's devices with their own counters (IFLA_STATS64,
    netns/linkstats.py), read in the one pass through the namespaces a
    scrape takes anyway (netns/snapshot.py)."""
    names = named_netns()
    found = {
        inode: summary.devices
        for inode, summary in snapshot.snapshot(max_age, devices=True).items()
    }
    # Namespaces the pass could not enter (privileges dropped since): through
    # the sockets opened in them before (linkstats.keep_namespaces).
    for inode, kept in linkstats.kept().items():
        if inode not in found:
            try:
                found[inode] = linkstats.link_stats(kept)
            except OSError:
                continue  # gone
    out: list[Row] = []
    for inode, devs in found.items():
        if isinstance(devs, Exception):
            raise devs
        for dev in devs:
            out.append({"netns": str(inode), "netns_name": names.get(inode, ""), **dev})
    return out


# Each family's counters of packets with no route, by nstat's names.
NO_ROUTES = {
    "IPv4": ("IpOutNoRoutes", "IpInNoRoutes"),
    "IPv6": ("Ip6OutNoRoutes", "Ip6InNoRoutes"),
}


def no_routes(max_age: float = SHARED_AGE) -> list[Row]:
    """Every namespace's packets with no route, per family (its SNMP MIBs,
    read in the scrape's one pass through the namespaces)."""
    names = named_netns()
    out: list[Row] = []
    for inode, summary in snapshot.snapshot(max_age, mibs=True).items():
        if isinstance(summary.mibs, Exception):
            raise summary.mibs
        for family, (sent, received) in NO_ROUTES.items():
            if sent in summary.mibs:  # (no IPv6 row with IPv6 off)
                out.append(
                    {
                        "netns": str(inode),
                        "netns_name": names.get(inode, ""),
                        "family": family,
                        "out_no_routes": summary.mibs[sent],
                        "in_no_routes": summary.mibs.get(received, 0),
                    }
                )
    return out


# ICMPv6 errors by type, as the namespace's snmp6 counts them (no
# tracepoint for ICMPv6: icmp:icmp_send is IPv4's).
ICMP6_ERRORS = {
    "DEST_UNREACH": "Icmp6OutDestUnreachs",
    "PKT_TOO_BIG": "Icmp6OutPktTooBigs",
    "TIME_EXCEED": "Icmp6OutTimeExcds",
    "PARAMPROB": "Icmp6OutParmProblems",
}


def icmp6_errors(max_age: float = SHARED_AGE) -> list[Row]:
    """Every namespace's ICMPv6 errors sent, by type (nstat Icmp6Out*), and
    those the rate limit kept back (Icmp6OutRateLimitHost) as type
    RATELIMITED. No rows with IPv6 off."""
    names = named_netns()
    out: list[Row] = []
    for inode, summary in snapshot.snapshot(max_age, mibs=True).items():
        if isinstance(summary.mibs, Exception):
            raise summary.mibs
        if "Icmp6OutMsgs" not in summary.mibs:
            continue
        counts = {t: summary.mibs.get(k, 0) for t, k in ICMP6_ERRORS.items()}
        counts["RATELIMITED"] = summary.mibs.get("Icmp6OutRateLimitHost", 0)
        for kind, value in counts.items():
            out.append(
                {
                    "netns": str(inode),
                    "netns_name": names.get(inode, ""),
                    "type": kind,
                    "value": value,
                }
            )
    return out


def listen_overflows(max_age: float = SHARED_AGE) -> list[Row]:
    """Every namespace's listeners' overflows: SYNs and handshakes dropped
    because an accept queue was full (TcpExtListenOverflows), and every
    connection a listener dropped (TcpExtListenDrops, those included)."""
    names = named_netns()
    out: list[Row] = []
    for inode, summary in snapshot.snapshot(max_age, mibs=True).items():
        if isinstance(summary.mibs, Exception):
            raise summary.mibs
        out.append(
            {
                "netns": str(inode),
                "netns_name": names.get(inode, ""),
                "overflows": summary.mibs.get("TcpExtListenOverflows", 0),
                "drops": summary.mibs.get("TcpExtListenDrops", 0),
            }
        )
    return out


def conntrack(max_age: float = SHARED_AGE) -> list[Row]:
    """Every namespace's connection tracking: entries against max_entries,
    and `conntrack -S`'s counters (insert_failed, drop, early_drop...). No
    rows where the kernel has no conntrack."""
    names = named_netns()
    out: list[Row] = []
    for inode, summary in snapshot.snapshot(max_age, conntrack=True).items():
        if isinstance(summary.conntrack, Exception):
            raise summary.conntrack
        if summary.conntrack is not None:
            out.append(
                {"netns": str(inode), "netns_name": names.get(inode, ""), **summary.conntrack}
            )
    return out


def _now(read: Callable[[], list[dict]]) -> Callable[[float], list[Row]]:
    """A procfs file: read at once, whatever the age asked for."""
    return lambda _max_age: read()


SOURCES: dict[str, Callable[[float], list[Row]]] = {
    "softirqs": _now(procfs.softirqs),  # /proc/softirqs: cpu, vector, value (runs)
    "softirq_seconds": _now(procfs.softirq_seconds),  # /proc/stat: cpu, value (seconds)
    "softnet": _now(procfs.softnet),  # /proc/net/softnet_stat: cpu, processed, dropped, squeezes
    "neigh_tables": _now(procfs.neigh_tables),  # /proc/net/stat/*_cache: family, entries...
    "no_routes": no_routes,  # every namespace's: netns, netns_name, family, out_/in_no_routes
    "icmp6_errors": icmp6_errors,  # every namespace's: netns, netns_name, type, value
    "listen_overflows": listen_overflows,  # every namespace's: overflows, drops
    "conntrack": conntrack,  # every namespace's: netns, netns_name, entries, drop...
    "devices": devices,  # every namespace's devices: netns, netns_name, device, rx_packets...
}
