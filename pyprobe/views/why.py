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


def causes(target: str, attempts: Sequence[Attempt], packets: Iterable[Packet]) -> list[Cause]:
    """The causes the evidence shows, the best supported first."""
    packets = list(packets)
    found: list[Cause] = []
    outcomes = Counter(a.outcome for a in attempts)
    n = len(attempts)

    drops: Counter[tuple[str, str, str]] = Counter()
    for p in packets:
        d = p.dropped
        # a SYN no socket took is the refusal below, said once
        refusal = d is not None and d["drop_reason"] == "NO_SOCKET" and outcomes["refused"]
        if d is not None and d["drop_reason"] not in _BENIGN and not refusal:
            drops[(d["drop_reason"], place(d), d["location"].partition("+")[0])] += 1
    for (reason, where, function), count in drops.most_common():
        by = _BY.get(reason, f"the kernel ({reason})")
        found.append(
            Cause(
                count * 2, f"dropped by {by} in {where}: {reason} at {function} ({count} packets)"
            )
        )

    host, _, port = target.rpartition(":")
    resets = [
        p
        for p in packets
        if "R" in (h := p.headers()).tcp_flags
        and h.src == host.strip("[]")
        and str(h.sport) == port
    ]
    if outcomes["refused"]:
        sent = f", sent in {place(resets[0].first)}" if resets else ""
        found.append(
            Cause(
                outcomes["refused"] * 2 + len(resets),
                f"connect refused: no listener on {target} (a TCP reset back{sent}; "
                f"{outcomes['refused']} of {n} attempts)",
            )
        )

    for p in packets:
        h = p.headers()
        if h.l4 == 1 and h.icmp_type == 3:
            kind = _UNREACH.get(h.icmp_code, f"code {h.icmp_code}")
            found.append(
                Cause(2, f"ICMP {kind} unreachable from {h.src}, sent in {place(p.first)}")
            )

    if outcomes["unreachable"] and not packets:
        found.append(
            Cause(
                outcomes["unreachable"] * 2,
                f"no route to {target}: connect failed at once, no packet sent "
                f"({outcomes['unreachable']} of {n} attempts)",
            )
        )

    if outcomes["timeout"] and not drops:
        out = [p for p in packets if not p.dropped and "S" in p.headers().tcp_flags]
        last = f"; the SYN was last seen {_last(out)}" if out else ""
        found.append(
            Cause(
                outcomes["timeout"],
                f"no answer from {target}: {outcomes['timeout']} of {n} attempts timed out "
                f"and no drop was traced on this host{last}",
            )
        )

    if outcomes["connected"]:
        ms = statistics.median(a.ms for a in attempts if a.outcome == "connected")
        found.append(
            Cause(
                0.5 * outcomes["connected"],
                f"reachable: {outcomes['connected']} of {n} attempts connected "
                f"(median {ms:.2f} ms)",
            )
        )

    others = {o: c for o, c in outcomes.items() if o not in _KNOWN}
    for outcome, count in others.items():
        found.append(Cause(count, f"connect failed: {outcome} ({count} of {n} attempts)"))
    return sorted(found, key=lambda c: -c.weight)


_KNOWN = ("connected", "refused", "timeout", "unreachable")


def _last(packets: list[Packet]) -> str:
    h = packets[-1].ordered[-1]
    return f"{what(h)} in {place(h)}"


def report(target: str, attempts: Sequence[Attempt], packets: Sequence[Packet]) -> list[str]:
    """The verdict's text: the causes, best first, then the evidence counted."""
    found = causes(target, attempts, packets)
    lines = [f"why {target}:"]
    if not found:
        lines.append("  nothing seen: no attempt made, no packet traced")
    lines += [f"  {i}. {c.text}" for i, c in enumerate(found, 1)]
    dropped = sum(1 for p in packets if p.dropped)
    lines.append(
        f"  (evidence: {len(attempts)} attempts, {len(packets)} packets traced, {dropped} dropped)"
    )
    return lines
