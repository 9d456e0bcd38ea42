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
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

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


@dataclass(frozen=True)
class Cause:
    weight: float  # the evidence's count, for ranking
    text: str


def place(h: dict[str, Any]) -> str:
    netns = h.get("netns_name") or str(h.get("netns") or "?")
    dev = h.get("device")
    return f"netns {netns}" + (f" on {dev}" if dev and dev != "-" else "")


def causes(
    target: str, attempts: Sequence[Attempt], packets: Iterable[Packet], udp: bool = False
) -> list[Cause]:
    """The causes the evidence shows, the best supported first. udp: the
    attempts were datagrams (answered, refused by an ICMP port
    unreachable, or unanswered), not connects."""
    packets = list(packets)
    outcomes = Counter(a.outcome for a in attempts)
    n = len(attempts)
    found = _drops(packets, refused=bool(outcomes["refused"]))
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
    done = outcomes["connected"] + outcomes["answered"]
    if done:
        ms = statistics.median(a.ms for a in attempts if a.outcome in ("connected", "answered"))
        found.append(
            Cause(
                0.5 * done,
                f"reachable: {done} of {n} attempts {'answered' if udp else 'connected'} "
                f"(median {ms:.2f} ms)",
            )
        )
    for outcome, count in outcomes.items():
        if outcome not in _KNOWN:
            found.append(Cause(count, f"failed: {outcome} ({count} of {n} attempts)"))
    return sorted(found, key=lambda c: -c.weight)


def _drops(packets: list[Packet], refused: bool) -> list[Cause]:
    """A cause per (reason, place, function) packets were dropped at."""
    drops: Counter[tuple[str, str, str]] = Counter()
    for p in packets:
        d = p.dropped
        # a request no socket took is the refusal, said once
        if (
            d is None
            or d["drop_reason"] in _BENIGN
            or (d["drop_reason"] == "NO_SOCKET" and refused)
        ):
            continue
        drops[(d["drop_reason"], place(d), d["location"].partition("+")[0])] += 1
    return [
        Cause(
            count * 2,
            f"dropped by {_BY.get(reason, f'the kernel ({reason})')} in {where}: {reason} at "
            f"{function} ({count} packets)",
        )
        for (reason, where, function), count in drops.most_common()
    ]


_KNOWN = ("connected", "answered", "refused", "timeout", "unreachable")


def _last(packets: list[Packet]) -> str:
    h = packets[-1].ordered[-1]
    return f"{what(h)} in {place(h)}"


def report(
    target: str, attempts: Sequence[Attempt], packets: Sequence[Packet], udp: bool = False
) -> list[str]:
    """The verdict's text: the causes, best first, then the evidence counted."""
    found = causes(target, attempts, packets, udp)
    lines = [f"why {target}:"]
    if not found:
        lines.append("  nothing seen: no attempt made, no packet traced")
    lines += [f"  {i}. {c.text}" for i, c in enumerate(found, 1)]
    dropped = sum(1 for p in packets if p.dropped)
    lines.append(
        f"  (evidence: {len(attempts)} attempts, {len(packets)} packets traced, {dropped} dropped)"
    )
    return lines
