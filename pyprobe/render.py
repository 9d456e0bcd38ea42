"""Output: aligned text lines for streams, rich tables for summaries, NDJSON."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from .decoders import TCP_STATES


def ndjson(record: Mapping[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), default=str)


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


TCPSTATE_HEADER = (
    f"{'SKADDR':<8} {'PID':>7} {'COMM':<12} {'NETNS':<12} {'LADDR:LPORT':<22} "
    f"{'RADDR:RPORT':<22} {'OLDSTATE':>11} -> {'NEWSTATE':<11} {'MS':>9}"
)


def _hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def tcpstate_line(ev: Mapping[str, Any], netns_name: str, timestamps: bool) -> str:
    ms = "-" if ev["ms"] is None else f"{ev['ms']:.3f}"
    # A pid/comm that is a guess (softirq, owner never seen) is marked with '*'.
    comm = ev["comm"] + ("" if ev["owner_known"] else "*")
    line = (
        f"{ev['skaddr'][-8:]:<8} {ev['pid']:>7} {comm[:12]:<12} {netns_name[:12]:<12} "
        f"{_hostport(ev['saddr'], ev['sport']):<22} {_hostport(ev['daddr'], ev['dport']):<22} "
        f"{ev['oldstate']:>11} -> {ev['newstate']:<11} {ms:>9}"
    )
    return f"{clock(ev['time'])} {line}" if timestamps else line


def transitions_table(
    interval: Mapping[tuple[str, str], int], total: Mapping[tuple[str, str], int], title: str
) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("OLDSTATE")
    table.add_column("NEWSTATE")
    table.add_column("COUNT", justify="right")
    table.add_column("TOTAL", justify="right")
    for (old, new), n in sorted(total.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add_row(old, new, str(interval.get((old, new), 0)), str(n))
    return table


def sockets_table(by_netns: Mapping[str, Mapping[str, int]], title: str) -> Table:
    states = [s for s in TCP_STATES.values() if any(s in c for c in by_netns.values())]
    table = Table(title=title, title_justify="left")
    table.add_column("NETNS")
    for s in states:
        table.add_column(s, justify="right")
    table.add_column("TOTAL", justify="right")
    for ns, counts in sorted(by_netns.items()):
        table.add_row(ns, *(str(counts.get(s, 0)) for s in states), str(sum(counts.values())))
    return table


def print_tables(
    tables: Iterable[Table], out: TextIO | None = None, width: int | None = None
) -> None:
    console = Console(file=out, width=width, color_system=None if out else "auto", highlight=False)
    for t in tables:
        console.print(t)


def rows_to_text(rows: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(ndjson(r) for r in rows)
