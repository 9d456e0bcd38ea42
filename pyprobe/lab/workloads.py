"""Bounded workloads between the lab's h1 (client) and h2 (server).

Each returns one line saying what it did; nothing runs longer than its
bounds, and servers it starts are stopped on the way out (Ctrl-C included).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import PyprobeError
from ..netns.namespaces import NETNS_RUN_DIR
from . import impair, topology, traffic

PORTS = {
    "churn": 8080,
    "bulk": 8081,
    "hoard": 8082,
    "refused": 8083,
    "firewall": 8084,
    "traced": 8085,
}


@dataclass
class Hosts:
    client: Path
    server: Path
    server_ns: str
    server_dev: str
    server_addr: str

    @classmethod
    def from_lab(cls) -> Hosts:
        state = topology.active()
        if state is None:
            raise PyprobeError("no lab is up: `pyprobe lab up` first")
        h1, h2 = state["hosts"]["h1"], state["hosts"]["h2"]
        return cls(
            NETNS_RUN_DIR / h1["netns"],
            NETNS_RUN_DIR / h2["netns"],
            h2["netns"],
            h2["dev"],
            h2["addr"],
        )


def churn(h: Hosts, n: int = 100) -> str:
    srv = traffic.Server(h.server, h.server_addr, PORTS["churn"])
    failures: list[str] = []
    try:
        # A lab with --loss breaks some connections (a SYN lost three times
        # outlasts the 5 s timeout): that is the point, so count them and go on.
        done = traffic.churn(h.client, h.server_addr, PORTS["churn"], n, failures=failures)
    finally:
        srv.stop()
    line = f"churn: {done} connections (connect, 1-byte request/response, close)"
    if failures:
        why = ", ".join(f"{k}: {v}" for k, v in Counter(failures).most_common())
        line += f"; {len(failures)} of {n} failed: {why}"
    return line


def bulk(h: Hosts, nbytes: int = 20_000_000) -> str:
    sink = traffic.Listener(h.server, h.server_addr, PORTS["bulk"])
    start = time.monotonic()
    try:
        traffic.send_bytes(h.client, h.server_addr, PORTS["bulk"], nbytes)
    finally:
        sink.stop()  # returns once the receiver has read everything
    secs = max(time.monotonic() - start, 1e-3)
    return f"bulk: {nbytes / 1e6:.0f} MB in {secs:.2g} s ({nbytes * 8 / secs / 1e6:.0f} Mbit/s)"


def hoard(
    h: Hosts, nbytes: int = 200_000, hold: float = 1.0, during: Callable[[], None] | None = None
) -> str:
    """A receiver that never reads: Recv-Q grows to what was sent."""
    sink = traffic.Listener(h.server, h.server_addr, PORTS["hoard"], read=False)
    conn: Any = None
    try:
        conn = traffic.send_bytes(h.client, h.server_addr, PORTS["hoard"], nbytes, close=False)
        time.sleep(0.1)
        if during:
            during()
        time.sleep(hold)
    finally:
        if conn is not None:
            conn.close()
        sink.stop()
    return f"hoard: {nbytes} bytes sent to a receiver that never reads"


def refused(h: Hosts, n: int = 20) -> str:
    done = traffic.refused(h.client, h.server_addr, PORTS["refused"], n)
    line = f"refused: {done} connects to a closed port (SYN answered by RST)"
    if done < n:  # the SYN or the RST lost (--loss), or h2 unreachable
        line += f"; {n - done} of {n} got no RST"
    return line


def firewall(h: Hosts, n: int = 100) -> str:
    impair.firewall(h.server_ns, h.server_dev, PORTS["firewall"], True)
    try:
        sent = traffic.udp_blast(h.client, h.server_addr, PORTS["firewall"], n)
        time.sleep(0.05)
    finally:
        impair.firewall(h.server_ns, h.server_dev, PORTS["firewall"], False)
    return f"firewall: {sent} UDP datagrams into a drop rule on the server"


WORKLOADS: dict[str, Callable[..., str]] = {
    "churn": churn,
    "bulk": bulk,
    "hoard": hoard,
    "refused": refused,
    "firewall": firewall,
}
