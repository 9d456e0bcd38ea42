"""What the probes saw, and the causes it names: shared by `pyprobe lab
scenario` (lab/scenarios.py: each failure of the notes named from the
probes it ran) and `pyprobe why` (views/why.py: the same probes attached
beside the trace of a destination).

Evidence is each probe's rows (counters: what changed while looking;
gauges: as they are) and its stream's events. Each finder here reads one
kind of failure out of it for a namespace (and an address or a port where
the failure has one) and returns a Cause (its weight: the evidence's count,
for ranking) or None when the probes do not show it: no cause is named
without its signal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..netns import bridges, rtnl, sockdiag
from ..netns.namespaces import NETNS_RUN_DIR, run_in_netns

LISTEN = 10


@dataclass(frozen=True)
class Cause:
    weight: float  # the evidence's count, for ranking
    text: str


@dataclass
class Evidence:
    """What the probes saw: each probe's rows and stream events, by probe name."""

    rows: dict[str, list[dict[str, Any]]]
    events: dict[str, list[dict[str, Any]]]

    def of(self, probe: str, metric: str, **labels: str) -> list[dict[str, Any]]:
        return [
            r
            for r in self.rows.get(probe, [])
            if r.get("metric") == metric and all(r.get(k) == v for k, v in labels.items())
        ]

    def total(self, probe: str, metric: str, **labels: str) -> float:
        return sum(float(r.get("value") or 0) for r in self.of(probe, metric, **labels))

    def stream(self, probe: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e for e in self.events.get(probe, []) if all(e.get(k) == v for k, v in fields.items())
        ]


def _key(row: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, str(v)) for k, v in row.items() if k != "value"))


def changed(
    before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """after's rows, a counter (`_total`) as its change since before (those
    that did not change left out), a gauge as it is now."""
    was = {_key(r): float(r.get("value") or 0) for r in before if "value" in r}
    out = []
    for row in after:
        if "value" not in row:
            continue
        if not str(row.get("metric", "")).endswith("_total"):
            out.append(dict(row))
            continue
        delta = float(row["value"] or 0) - was.get(_key(row), 0.0)
        if delta:
            out.append({**row, "value": delta})
    return out


def neighbour_failed(ev: Evidence, netns: str, addr: str | None = None) -> Cause | None:
    """A neighbour resolution that failed in netns (for addr, when given)."""
    failed = ev.stream("neigh", kind="failed", netns_name=netns)
    if addr is not None:
        failed = [e for e in failed if e.get("addr") == addr]
    if not failed:
        return None
    dropped = ev.total("drops", "drops_total", netns_name=netns, reason="NEIGH_FAILED")
    e = failed[0]
    return Cause(
        2 * max(dropped, len(failed)),
        f"no ARP reply from {e['addr']} on {e['device']} in {netns}: resolution failed "
        f"(neigh), {dropped:.0f} packets dropped NEIGH_FAILED (drops)",
    )


def enslaved_address(ev: Evidence, netns: str) -> Cause | None:
    """Resolutions that failed on a bridge's port: an address left on an
    enslaved device. Its ARP requests go out of that one port, and the
    answers, taken by the bridge, arrive on the bridge device: the port's
    entries never resolve."""
    failed = ev.stream("neigh", kind="failed", netns_name=netns)
    if not failed:
        return None
    try:
        ports = run_in_netns(NETNS_RUN_DIR / netns, bridges.ports)
    except OSError:  # not a named namespace (or gone): no ports to tell
        return None
    enslaved = {p["name"]: p["bridge"] for p in ports.values() if p["bridge"]}
    on_ports = [e for e in failed if e["device"] in enslaved]
    if not on_ports:
        return None
    e = on_ports[0]
    return Cause(
        3 * len(on_ports),  # above a plain failed resolution: it says why
        f"an address on {e['device']}, a port of {enslaved[e['device']]} in {netns}: ARP for "
        f"{e['addr']} went out of that port alone and its answers arrive on "
        f"{enslaved[e['device']]} — {len(on_ports)} resolutions failed on it (neigh); the "
        f"address belongs on {enslaved[e['device']]}",
    )


def no_route(ev: Evidence, netns: str) -> Cause | None:
    """Route lookups that found nothing in netns, and the packets the kernel
    counted as sent nowhere (IpOutNoRoutes)."""
    rows = ev.of("routes", "route_lookups_failed_total", netns_name=netns, result="no_route")
    sent = ev.total("routes", "route_out_no_routes_total", netns_name=netns, family="IPv4")
    if not rows or not sent:
        return None
    worst = max(rows, key=lambda r: r["value"])
    return Cause(
        2 * sent,
        f"no route to {worst['destination']} in {netns} (table {worst['table']}): "
        f"{worst['value']:.0f} lookups failed (routes), IpOutNoRoutes +{sent:.0f}",
    )


def refused(ev: Evidence, port: int | None, netns: str | None = None) -> Cause | None:
    """TCP segments to port (None: any) no socket took (drops NO_SOCKET) and
    the resets the namespace that dropped them sent back (tcpretrans)."""
    syns = [
        e
        for e in ev.stream("drops", reason="NO_SOCKET")
        if (port is None or e.get("dport") == port)
        and (netns is None or e.get("netns_name") == netns)
        and e.get("l4") in (None, "TCP", "tcp", 6)
    ]
    if not syns:
        return None
    name = syns[0].get("netns_name") or ""
    where = name or f"netns {syns[0].get('netns')}"
    syns = [e for e in syns if (e.get("netns_name") or "") == name]
    resets = ev.total("tcpretrans", "tcp_resets_sent_total", netns_name=name)
    if not resets:
        return None
    return Cause(
        2 * len(syns),
        f"connect refused: no listener on {syns[0]['daddr']}:{syns[0]['dport']} in {where}: "
        f"{len(syns)} SYNs dropped NO_SOCKET (drops), {resets:.0f} resets sent (tcpretrans)",
    )


def listeners(netns: str, port: int) -> list[sockdiag.Sock]:
    """The listeners on port in netns (a name under /run/netns), as `ss -lnt`."""
    found = run_in_netns(NETNS_RUN_DIR / netns, sockdiag.tcp_sockets)
    return [s for s in found if s.state == LISTEN and s.sport == port]


def accept_queue_full(ev: Evidence, netns: str, addr: str, port: int) -> Cause | None:
    """SYNs a full accept queue turned away in netns (a SYN to a full accept
    queue is consumed, not freed as a drop: the kernel's ListenOverflows
    counts it, which queues reads), told of the listener on port there."""
    overflows = ev.total("queues", "tcp_listen_overflows_total", netns_name=netns)
    if not overflows:
        return None
    found = listeners(netns, port)
    # the listener as `ss -lnt` shows it: Recv-Q waiting, Send-Q the limit
    queue = f" (accept queue {found[0].recv_q}/{found[0].send_q})" if found else ""
    return Cause(
        2 * overflows,
        f"accept queue full on {addr}:{port} in {netns}{queue}: {overflows:.0f} "
        f"listen overflows (queues: TcpExtListenOverflows): the application does not "
        f"accept, or its backlog is too small",
    )


def stp_blocks(ev: Evidence, netns: str) -> Cause | None:
    """Frames a bridge in netns dropped at a port STP blocks (a loop cut)."""
    rows = [
        r
        for r in ev.of("drops", "drops_total", netns_name=netns, reason="BRIDGE_INGRESS_STP_STATE")
        if r["value"]
    ]
    if not rows:
        return None
    try:
        ports = run_in_netns(NETNS_RUN_DIR / netns, bridges.ports)
    except OSError:  # not a named namespace (or gone): no ports to tell
        return None
    blocking = sorted(p["name"] for p in ports.values() if p["stp_state"] == "blocking")
    bridge = next((p["bridge"] for p in ports.values() if p["stp_state"] == "blocking"), None)
    where = ", ".join(blocking) or rows[0]["device"]
    dropped = sum(r["value"] for r in rows)
    return Cause(
        2 * dropped,
        f"STP blocks {where} on {bridge or 'br0'} in {netns}: a loop; {dropped:.0f} frames "
        f"dropped BRIDGE_INGRESS_STP_STATE at {rows[0]['device']} (drops), `pyprobe bridge` "
        f"shows the port blocking",
    )


def conntrack_trouble(ev: Evidence, netns: str) -> Cause | None:
    """Connections conntrack dropped or could not insert in netns (a full table)."""
    counts = {
        what: ev.total("conntrack", f"conntrack_{what}_total", netns_name=netns)
        for what in ("drops", "early_drops", "insert_failed")
    }
    if not any(counts.values()):
        return None
    entries = ev.total("conntrack", "conntrack_entries", netns_name=netns)
    limit = ev.total("conntrack", "conntrack_max_entries", netns_name=netns)
    said = ", ".join(f"{n:.0f} {what.replace('_', ' ')}" for what, n in counts.items() if n)
    return Cause(
        2 * sum(counts.values()),
        f"conntrack in {netns}: {said} (conntrack; table {entries:.0f}/{limit:.0f})",
    )


def conntrack_full(ev: Evidence, netns: str) -> Cause | None:
    """A full conntrack table in netns: its entries at the limit and new
    connections dropped for want of one (conntrack's drop), with the
    packets the drops probe saw netfilter drop there."""
    entries = ev.total("conntrack", "conntrack_entries", netns_name=netns)
    limit = ev.total("conntrack", "conntrack_max_entries", netns_name=netns)
    dropped = ev.total("conntrack", "conntrack_drops_total", netns_name=netns)
    if not limit or entries < limit or not dropped:
        return None
    early = ev.total("conntrack", "conntrack_early_drops_total", netns_name=netns)
    failed = ev.total("conntrack", "conntrack_insert_failed_total", netns_name=netns)
    evicted = f", {early:.0f} evicted early" if early else ""
    evicted += f", {failed:.0f} insert failed" if failed else ""
    packets = ev.total("drops", "drops_total", netns_name=netns, reason="NETFILTER_DROP")
    seen = f", {packets:.0f} packets dropped NETFILTER_DROP there (drops)" if packets else ""
    return Cause(
        3 * dropped,  # above conntrack_trouble's: it says why
        f"conntrack table full in {netns}: {entries:.0f}/{limit:.0f} entries "
        f"(nf_conntrack_max), {dropped:.0f} new connections dropped{evicted} (conntrack)"
        f"{seen}",
    )


def _mtu(netns: str, device: str) -> int | None:
    """device's MTU in netns (a name under /run/netns), None when not found."""

    def read() -> int | None:
        with rtnl.iproute() as ipr:
            found = ipr.link("get", ifname=device)
        return int(found[0].get_attr("IFLA_MTU")) if found else None

    try:
        return run_in_netns(NETNS_RUN_DIR / netns, read)
    except Exception:  # gone, or no such device (pyroute2's NetlinkError): not said
        return None


def mtu_black_hole(ev: Evidence, netns: str) -> Cause | None:
    """A path MTU black hole seen from the sender in netns: ICMP errors from
    a peer dropped by netfilter there (a firewall that drops ICMP), while
    TCP segments to that peer are retransmitted. That the ICMP is the
    path's "fragmentation needed" is inferred (drops does not read its type;
    `why -s` traces it): a bridged VXLAN answers an oversize DF packet with
    one of its own, from the inner destination's address, built by the
    tunnel (no icmp_send: the icmp probe does not see it). Without it the
    sender never lowers its MTU and resends packets that can never pass."""
    dropped = [
        e
        for e in ev.stream("drops", reason="NETFILTER_DROP", netns_name=netns)
        if e.get("l4") in ("ICMP", "icmp", 1)
    ]
    retransmitted = [
        e for e in ev.stream("tcpretrans", kind="retransmit", netns_name=netns) if e.get("daddr")
    ]
    peers = {e["saddr"] for e in dropped} & {e["daddr"] for e in retransmitted}
    if not peers:
        return None
    peer = max(peers, key=lambda p: sum(e["saddr"] == p for e in dropped))
    icmp = [e for e in dropped if e["saddr"] == peer]
    segs = [e for e in retransmitted if e["daddr"] == peer]
    n = sum(int(e.get("segs") or 1) for e in segs)
    device = icmp[0].get("device") or "-"
    mtu = _mtu(netns, device) if device != "-" else None
    said = (
        f" ({device}'s MTU {mtu}: what the sender still believes the path carries)" if mtu else ""
    )
    return Cause(
        2 * (len(icmp) + n),
        f"MTU black hole from {netns} to {peer}: {len(icmp)} ICMP errors from {peer} dropped "
        f"by netfilter on {device} in {netns} (drops NETFILTER_DROP), {n} segments to "
        f"{peer}:{segs[0]['dport']} retransmitted (tcpretrans): packets too big for the path "
        f"vanish and the ICMP that would say so (fragmentation needed) never arrives{said}",
    )
