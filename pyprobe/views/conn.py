"""One line per connection with everything that went wrong on it.

Joins three streams by the connection's two endpoints: retransmits and
resets (tcpretrans), drops of its packets (drops, with the packet's
5-tuple) and its state changes (tcpstates: the current state and owner).
Both directions and both ends (e.g. two namespaces on one host) fold into
one connection, since that is what the person debugging asks about.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..core.text import hostport

Endpoint = tuple[str, int]


def conn_key(a: Endpoint, b: Endpoint) -> tuple[Endpoint, Endpoint]:
    return (a, b) if a <= b else (b, a)


@dataclass
class Conn:
    a: Endpoint
    b: Endpoint
    state: str = ""
    pid: int = 0
    comm: str = ""
    retransmits: int = 0
    resets_sent: int = 0
    resets_received: int = 0
    drops: Counter[str] = field(default_factory=Counter)
    last: float = 0.0

    @property
    def failures(self) -> int:
        return self.retransmits + self.resets_sent + self.resets_received + sum(self.drops.values())

    def record(self) -> dict[str, Any]:
        return {
            "endpoints": [hostport(*self.a), hostport(*self.b)],
            "state": self.state,
            "pid": self.pid,
            "comm": self.comm,
            "retransmits": self.retransmits,
            "resets_sent": self.resets_sent,
            "resets_received": self.resets_received,
            "drops": dict(self.drops),
            "last": self.last,
        }


class ConnView:
    def __init__(self, limit: int = 65536) -> None:
        self.conns: dict[tuple[Endpoint, Endpoint], Conn] = {}
        self.limit = limit  # bounded: the oldest quiet connections go first

    def _conn(self, saddr: str, sport: int, daddr: str, dport: int) -> Conn | None:
        if not saddr or not daddr:
            return None
        key = conn_key((saddr, sport), (daddr, dport))
        conn = self.conns.get(key)
        if conn is None:
            if len(self.conns) >= self.limit:
                oldest = min(self.conns, key=lambda k: self.conns[k].last)
                del self.conns[oldest]
            conn = self.conns[key] = Conn(*key)
        return conn

    def feed(self, source: str, events: Iterable[dict[str, Any]]) -> None:
        for ev in events:
            conn = self._conn(ev["saddr"], ev["sport"], ev["daddr"], ev["dport"])
            if conn is None:
                continue
            conn.last = ev.get("time", time.time())
            if ev.get("owner_known") and ev.get("pid"):
                conn.pid, conn.comm = ev["pid"], ev["comm"]
            if source == "tcpstates":
                conn.state = ev["newstate"]
            elif source == "tcpretrans":
                kind = ev["kind"]
                if kind in ("retransmit", "synack_retransmit"):
                    conn.retransmits += ev["segs"] or 1
                elif kind == "reset_sent":
                    conn.resets_sent += 1
                elif kind == "reset_received":
                    conn.resets_received += 1
                conn.state = conn.state or ev["state"]
            elif source == "drops" and ev["l4"] == "TCP":
                conn.drops[ev["reason"]] += 1

    def failing(self, top: int = 20) -> list[Conn]:
        bad = [c for c in self.conns.values() if c.failures]
        bad.sort(key=lambda c: (-c.failures, -c.last))
        return bad[:top]
