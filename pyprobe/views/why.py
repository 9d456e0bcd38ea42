"""`pyprobe why`'s verdict: what a bounded probe of a destination saw (its
connection attempts) and what the trace saw of its packets (views/trace.py),
joined into causes, the likeliest first.

Evidence, and what it says:
  a packet dropped        where (netns, device), why (the kernel's reason)
                          and by whom (netfilter, tc, the neighbour layer,
                          routing, no socket), the most packets first
  a TCP reset back        nothing listens on that port, in the netns that
                          sent the reset
  an ICMP error back      unreachable (host, net, port, fragmentation
                          needed) and who sent it
  attempts that timed     no answer: where the request was last seen
  out, nothing dropped
  attempts that failed    no route (connect's own error, no packet sent)
  at once
  attempts that connected reachable
  data not acknowledged   (--size) connected, but what was written after
                          stalled: the handshake passed, the data did not

And, from the probes attached beside the trace (views/evidence.py, the
same findings `pyprobe lab scenario` names), in the namespaces the
packets crossed and the one the probe ran from:
  neigh                   the address whose resolution failed
  routes                  the lookups that found no route, by destination
  drops + tcpretrans      the SYNs no socket took, the resets sent back
  queues                  SYNs turned away by a full accept queue
  drops (a bridge's)      frames STP blocked at a port: a loop
  conntrack               connections dropped or not inserted; a full
                          table (entries at the limit, new ones dropped)
  drops + tcpretrans      ICMP from the destination dropped by netfilter
                          while segments to it are retransmitted: an MTU
                          black hole
  drops, icmp             drops and ICMP errors off the traced packets
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from . import evidence as ev_
from .evidence import Cause, Evidence
from .trace import Packet, what

# drop reasons (without SKB_DROP_REASON_) -> who drops, in words
_BY = {
    "NETFILTER_DROP": "netfilter (a firewall rule)",
    "TC_INGRESS": "a tc filter (ingress)",
    "TC_EGRESS": "a tc filter (egress)",
    "TC_DROP": "a tc action",
    "NEIGH_FAILED": "the neighbour layer: no ARP/NDP answer",
    "NEIGH_QUEUEFULL": "the neighbour layer: too many packets waiting for an ARP answer",
    "NEIGH_DEAD": "the neighbour layer: the entry died",
    "IP_NOROUTES": "routing: no route",
    "IP_INNOROUTES": "routing: no route for an incoming packet",
    "IP_OUTNOROUTES": "routing: no route out",
    "NO_SOCKET": "the stack: no socket on that port",
    "QDISC_DROP": "a queueing discipline (full)",
    "FULL_RING": "the device's ring (full)",
    "DEV_READY": "a device that is down",
    "IP_RPFILTER": "reverse-path filtering (rp_filter)",
    "PKT_TOO_BIG": "a packet bigger than the path's MTU",
}
# Ends a probe's own connections have (its teardown: it closes without
# reading what a server sent), not causes.
_BENIGN = {
    "SOCKET_CLOSE", "QUEUE_PURGE", "TCP_OLD_DATA", "TCP_CLOSE", "NOT_SPECIFIED",
    "TCP_ABORT_ON_DATA",
}  # fmt: skip
_UNREACH = {
    0: "net",
    1: "host",
    2: "protocol",
    3: "port",
    4: "fragmentation needed",
    13: "prohibited",
}


@dataclass(frozen=True)
class Attempt:
    """One connection attempt: how it ended (connected, refused, timeout,
    unreachable, or an errno's text) and how long it took."""

    outcome: str
    ms: float


def observed(packets: Iterable[Packet], host: str, port: int, udp: bool = False) -> list[Attempt]:
    """What real traffic to host:port did (`why --watch`), as attempts:
    each client's first SYN (UDP: first datagram) to it, ended by what came
    back — a SYN-ACK connected it, a reset refused it (UDP: an answer, or an
    ICMP port unreachable quoting it), another ICMP unreachable quoting it
    made it unreachable — and nothing, a timeout. ms: from its first hop to
    the answer's (0 for a timeout)."""
    proto = 17 if udp else 6
    started: dict[tuple[str, int], int] = {}
    ended: dict[tuple[str, int], Attempt] = {}

    def end(client: tuple[str, int], outcome: str, ts: int) -> None:
        if client in started and client not in ended:
            ended[client] = Attempt(outcome, (ts - started[client]) / 1e6)

    for p in sorted(packets, key=lambda p: p.first["ts_ns"]):
        h, ts = p.headers(), p.first["ts_ns"]
        if h.l4 == proto and h.dst == host and h.dport == port:
            if udp or ("S" in h.tcp_flags and "A" not in h.tcp_flags):
                started.setdefault((h.src, h.sport), ts)
        elif h.l4 == proto and h.src == host and h.sport == port:
            flags = h.tcp_flags
            if udp:
                end((h.dst, h.dport), "answered", ts)
            elif "R" in flags:
                end((h.dst, h.dport), "refused", ts)
            elif "S" in flags and "A" in flags:
                end((h.dst, h.dport), "connected", ts)
        elif (h.l4, h.icmp_type) in ((1, 3), (58, 1)):  # destination unreachable
            inner = p.quoted()
            if inner.l4 == proto and inner.dst == host and inner.dport == port:
                port_unreachable = h.icmp_code == (3 if h.l4 == 1 else 4)
                outcome = "refused" if port_unreachable else "unreachable"
                end((inner.src, inner.sport), outcome, ts)
    return [ended.get(client, Attempt("timeout", 0.0)) for client in started]


def place(h: dict[str, Any]) -> str:
    netns = h.get("netns_name") or str(h.get("netns") or "?")
    dev = h.get("device")
    return f"netns {netns}" + (f" on {dev}" if dev and dev != "-" else "")


def causes(
    target: str,
    attempts: Sequence[Attempt],
    packets: Iterable[Packet],
    udp: bool = False,
    evidence: Evidence | None = None,
    source: str | None = None,
) -> list[Cause]:
    """The causes the evidence shows, the best supported first. udp: the
    attempts were datagrams (answered, refused by an ICMP port
    unreachable, or unanswered), not connects. evidence: what the other
    probes saw meanwhile; source: the namespace the attempts were made
    from (its name; None: this one)."""
    packets = list(packets)
    outcomes = Counter(a.outcome for a in attempts)
    n = len(attempts)
    found = _drops(packets, refused=bool(outcomes["refused"]), ev=evidence)
    host, _, port = target.rpartition(":")
    host = host.strip("[]")

    icmp: Counter[tuple[str, str, str]] = Counter()
    for p in packets:
        h = p.headers()
        if h.l4 == 1 and h.icmp_type == 3:
            kind = _UNREACH.get(h.icmp_code, f"code {h.icmp_code}")
            icmp[(kind, h.src, place(p.first))] += 1
    if outcomes["refused"]:
        if udp:
            back = [where for (kind, _, where) in icmp if kind == "port"]
            what = "an ICMP port unreachable back" + (f", sent in {back[0]}" if back else "")
            icmp = Counter({k: c for k, c in icmp.items() if k[0] != "port"})  # said here
        else:
            resets = [
                p
                for p in packets
                if "R" in (h := p.headers()).tcp_flags and h.src == host and str(h.sport) == port
            ]
            what = "a TCP reset back" + (f", sent in {place(resets[0].first)}" if resets else "")
        found.append(
            Cause(
                outcomes["refused"] * 2,
                f"{'refused' if udp else 'connect refused'}: no listener on {target} "
                f"({what}; {outcomes['refused']} of {n} attempts)",
            )
        )
    for (kind, src, where), count in icmp.items():
        found.append(Cause(count * 2, f"ICMP {kind} unreachable from {src}, sent in {where}"))

    if outcomes["unreachable"] and not packets:
        found.append(
            Cause(
                outcomes["unreachable"] * 2,
                f"no route to {target}: {'sending' if udp else 'connect'} failed at once, "
                f"no packet sent ({outcomes['unreachable']} of {n} attempts)",
            )
        )
    if outcomes["timeout"] and len(found) == 0:
        first = [p for p in packets if p.headers().dst == host and not p.dropped]
        request = "datagram" if udp else "SYN"
        last = f"; the {request} was last seen {_last(first)}" if first else ""
        quiet = " (a UDP service may answer nothing)" if udp else ""
        found.append(
            Cause(
                outcomes["timeout"],
                f"no answer from {target}: {outcomes['timeout']} of {n} attempts timed out "
                f"and no drop was traced on this host{last}{quiet}",
            )
        )
    if outcomes["stalled"]:
        found.append(
            Cause(
                outcomes["stalled"] * 2,
                f"stalled: connected to {target}, but the data written was not acknowledged "
                f"({outcomes['stalled']} of {n} attempts): the handshake passed, the data did not",
            )
        )
    done = outcomes["connected"] + outcomes["answered"]
    if done:
        ms = statistics.median(a.ms for a in attempts if a.outcome in ("connected", "answered"))
        found.append(
            Cause(
                0.1 * done,
                f"reachable: {done} of {n} attempts {'answered' if udp else 'connected'} "
                f"(median {ms:.2f} ms)",
            )
        )
    for outcome, count in outcomes.items():
        if outcome not in _KNOWN:
            found.append(Cause(count, f"failed: {outcome} ({count} of {n} attempts)"))
    if evidence is not None:
        found = _joined(found, evidence, host, int(port), packets, outcomes, udp, source)
    return sorted(found, key=lambda c: -c.weight)


def crossed(packets: Iterable[Packet], source: str | None) -> list[str]:
    """The namespaces (names) the packets' hops were in, the source's first
    ("": this one, where the probe ran from it; a hop whose namespace is not
    known adds none)."""
    names = [source or ""] + [h.get("netns_name") or "" for p in packets for h in p.hops]
    return [n for n in dict.fromkeys(names) if n or source is None]


def _joined(
    found: list[Cause],
    ev: Evidence,
    host: str,
    port: int,
    packets: list[Packet],
    outcomes: Counter[str],
    udp: bool,
    source: str | None,
) -> list[Cause]:
    """The trace's causes with what the other probes saw, in the namespaces
    the packets crossed: a finding that says more of a cause replaces it
    (the neighbour that failed for a NEIGH_FAILED drop, the route lookups
    for a connect that failed at once, the SYNs and resets for a refusal)."""
    places = crossed(packets, source)
    named = [p for p in places if p]
    out = list(found)
    explained = {"NO_SOCKET"} if outcomes["refused"] else set()

    def replace(prefix: str, cause: Cause) -> None:
        nonlocal out
        old = [c for c in out if c.text.startswith(prefix)]
        out = [c for c in out if c not in old]
        out.append(Cause(max([cause.weight] + [c.weight for c in old]), cause.text))

    for ns in named:
        if cause := ev_.neighbour_failed(ev, ns, host) or ev_.neighbour_failed(ev, ns):
            replace(f"dropped by {_BY['NEIGH_FAILED']} in netns {ns}", cause)
            explained.add("NEIGH_FAILED")
        if outcomes["unreachable"] and (cause := ev_.no_route(ev, ns)):
            before = next((c.text for c in out if c.text.startswith("no route to ")), "")
            tail = before[before.find(": ") :] if ": " in before else ""
            replace("no route to ", Cause(cause.weight, cause.text + tail.replace(": ", "; ", 1)))
        if not udp and (cause := ev_.accept_queue_full(ev, ns, host, port)):
            # the timeouts' cause: their SYNs were turned away
            replace("no answer from ", Cause(cause.weight, cause.text + _timed_out(outcomes)))
        if cause := ev_.enslaved_address(ev, ns):  # why those resolutions fail
            out.append(cause)
        if cause := ev_.stp_blocks(ev, ns):
            out.append(cause)
            explained.add("BRIDGE_INGRESS_STP_STATE")
        if cause := ev_.conntrack_full(ev, ns):
            # why netfilter dropped the packets there: no room for their entry
            replace(f"dropped by {_BY['NETFILTER_DROP']} in netns {ns}", cause)
        elif cause := ev_.conntrack_trouble(ev, ns):
            out.append(cause)
        if not udp and (cause := ev_.mtu_black_hole(ev, ns)):
            out.append(cause)
    if outcomes["refused"] and not udp:
        # (behind a DNAT the SYN no socket took has the port it was mapped to)
        cause = ev_.refused(ev, port) or next(
            filter(None, (ev_.refused(ev, None, ns) for ns in named)), None
        )
        if cause and any(c.text.startswith("connect refused: ") for c in out):
            # (where the trace first saw the reset may be a NAT's: this names the listener's)
            n = sum(outcomes.values())
            tail = f" ({outcomes['refused']} of {n} attempts)"
            replace("connect refused: ", Cause(0, cause.text + tail))
    traced = {(d["drop_reason"], d.get("netns_name") or "") for p in packets if (d := p.dropped)}
    family = "IPv6" if ":" in host else "IPv4"
    said = traced | {(r, ns) for r in explained for ns in places}
    out += _other_drops(ev, set(places), said, family)
    # (a neighbour that failed tells its sender with a host unreachable: said)
    quiet = set(places) if "NEIGH_FAILED" in explained else set()
    out += _other_icmp(ev, set(places) - quiet, host, packets)
    return out


def _timed_out(outcomes: Counter[str]) -> str:
    n = sum(outcomes.values())
    return f"; {outcomes['timeout']} of {n} attempts timed out" if outcomes["timeout"] else ""


def _other_drops(
    ev: Evidence, places: set[str], said: set[tuple[str, str]], family: str
) -> list[Cause]:
    """Drops the drops probe saw in those namespaces that no cause above
    tells of (not the traced packets': a frame ARP sent, a packet the filter
    did not match), of the destination's family (or ARP, or not IP)."""
    other = {"IPv4", "IPv6"} - {family}
    drops: Counter[tuple[str, str, str, str]] = Counter()
    for e in ev.stream("drops"):
        ns, reason = e.get("netns_name") or "", e.get("reason") or ""
        if ns not in places or reason in _BENIGN or (reason, ns) in said:
            continue
        if e.get("protocol") in other:
            continue
        drops[(reason, ns, e.get("device") or "-", str(e.get("location")).partition("+")[0])] += 1
    return [
        Cause(
            count,
            f"dropped by {_BY.get(reason, f'the kernel ({reason})')} in "
            f"{place({'netns_name': ns, 'device': dev})} (drops {reason} at {fn}, "
            f"{count} packets)",
        )
        for (reason, ns, dev, fn), count in drops.most_common()
    ]


def _other_icmp(ev: Evidence, places: set[str], host: str, packets: list[Packet]) -> list[Cause]:
    """ICMP errors about the destination the icmp probe saw sent and the
    trace did not (one a host sends itself: a neighbour that failed)."""
    if any(p.headers().l4 == 1 for p in packets):
        return []
    sent: Counter[tuple[str, Any, str]] = Counter()
    for e in ev.stream("icmp"):
        if (e.get("netns_name") or "") in places and e.get("daddr") == host:
            sent[(str(e.get("type")), e.get("code"), place(e))] += 1
    return [
        Cause(count, f"ICMP {kind} (code {code}) about {host} sent in {where} (icmp, {count})")
        for (kind, code, where), count in sent.most_common()
    ]


def _drops(packets: list[Packet], refused: bool, ev: Evidence | None = None) -> list[Cause]:
    """A cause per (reason, place, function) packets were dropped at; with
    the drops probe's count of that reason in that namespace beside it."""
    drops: Counter[tuple[str, str, str, str]] = Counter()
    for p in packets:
        d = p.dropped
        # a request no socket took is the refusal, said once
        if (
            d is None
            or d["drop_reason"] in _BENIGN
            or (d["drop_reason"] == "NO_SOCKET" and refused)
        ):
            continue
        ns = d.get("netns_name") or ""
        drops[(d["drop_reason"], place(d), d["location"].partition("+")[0], ns)] += 1
    out = []
    for (reason, where, function, ns), count in drops.most_common():
        counted = ev.total("drops", "drops_total", netns_name=ns, reason=reason) if ev else 0
        also = f"; drops counted {counted:.0f} {reason} there (drops)" if counted else ""
        out.append(
            Cause(
                count * 2,
                f"dropped by {_BY.get(reason, f'the kernel ({reason})')} in {where}: {reason} "
                f"at {function} ({count} packets{also})",
            )
        )
    return out


_KNOWN = ("connected", "answered", "refused", "timeout", "unreachable", "stalled")


def _last(packets: list[Packet]) -> str:
    h = packets[-1].ordered[-1]
    return f"{what(h)} in {place(h)}"


def report(
    target: str,
    attempts: Sequence[Attempt],
    packets: Sequence[Packet],
    udp: bool = False,
    evidence: Evidence | None = None,
    source: str | None = None,
    watched: float | None = None,
) -> list[str]:
    """The verdict's text: the causes, best first, then the evidence
    counted. watched: the attempts were real traffic, seen for that many
    seconds (observed()), not made here."""
    found = causes(target, attempts, packets, udp, evidence, source)
    lines = [f"why {target}:"]
    if not found:
        made = "no attempt seen" if watched is not None else "no attempt made"
        lines.append(f"  nothing seen: {made}, no packet traced")
    lines += [f"  {i}. {c.text}" for i, c in enumerate(found, 1)]
    dropped = sum(1 for p in packets if p.dropped)
    beside = ""
    if evidence is not None:
        beside = f"; beside: {', '.join(sorted(evidence.rows))}"
    seen = f" seen in {watched:g} s of traffic" if watched is not None else ""
    lines.append(
        f"  (evidence: {len(attempts)} attempts{seen}, {len(packets)} packets traced, "
        f"{dropped} dropped{beside})"
    )
    return lines
