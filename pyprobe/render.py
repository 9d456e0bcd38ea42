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


_QUOTED: dict[str | None, str] = {None: "null"}


def quoted(text: str | None) -> str:
    """JSON for a string that repeats (comm, namespace name), cached."""
    out = _QUOTED.get(text)
    if out is None:
        if len(_QUOTED) > 65536:
            _QUOTED.clear()
            _QUOTED[None] = "null"
        out = _QUOTED[text] = json.dumps(text)
    return out


def clock(ts: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ts))


TCPSTATE_HEADER = (
    f"{'SKADDR':<8} {'PID':>7} {'COMM':<12} {'NETNS':<12} {'LADDR:LPORT':<22} "
    f"{'RADDR:RPORT':<22} {'OLDSTATE':>11} -> {'NEWSTATE':<11} {'MS':>9}"
)


def hostport(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def tcpstate_line(ev: Mapping[str, Any], netns_name: str, timestamps: bool) -> str:
    ms = "-" if ev["ms"] is None else f"{ev['ms']:.3f}"
    # A pid/comm that is a guess (softirq, owner never seen) is marked with '*'.
    comm = ev["comm"] + ("" if ev["owner_known"] else "*")
    line = (
        f"{ev['skaddr'][-8:]:<8} {ev['pid']:>7} {comm[:12]:<12} {netns_name[:12]:<12} "
        f"{hostport(ev['saddr'], ev['sport']):<22} {hostport(ev['daddr'], ev['dport']):<22} "
        f"{ev['oldstate']:>11} -> {ev['newstate']:<11} {ms:>9}"
    )
    return f"{clock(ev['time'])} {line}" if timestamps else line


# `pyprobe tcplife`: bcc tcplife's columns, with the namespace
TCPLIFE_HEADER = (
    f"{'PID':>7} {'COMM':<12} {'NETNS':<12} {'LADDR:LPORT':<22} {'RADDR:RPORT':<22} "
    f"{'TX_KB':>8} {'RX_KB':>8} {'MS':>10}"
)


def tcplife_line(ev: Mapping[str, Any], netns_name: str, timestamps: bool) -> str:
    """A connection at its close: bytes acknowledged (TX) and received (RX)
    over its life, in KiB as tcplife shows them, and its age in ms ('-' when
    it was born before the probe started)."""
    comm = ev["comm"] + ("" if ev["owner_known"] else "*")
    tx, rx = ("-", "-") if ev["tx_bytes"] is None else (ev["tx_bytes"] >> 10, ev["rx_bytes"] >> 10)
    ms = "-" if ev["life_ms"] is None else f"{ev['life_ms']:.2f}"
    line = (
        f"{ev['pid']:>7} {comm[:12]:<12} {netns_name[:12]:<12} "
        f"{hostport(ev['saddr'], ev['sport']):<22} {hostport(ev['daddr'], ev['dport']):<22} "
        f"{tx:>8} {rx:>8} {ms:>10}"
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
    if width is None and not console.is_terminal:
        console.width = 200  # piped: whole rows, not ellipses
    for t in tables:
        console.print(t)


def rows_to_text(rows: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(ndjson(r) for r in rows)


_HIDDEN = {"metric", "value", "delta", "count", "sum", "buckets", "p50", "p99", "netns_name"}
# Column names as the stream and bcc's tcpstates print them
_HEADERS = {"old_state": "OLDSTATE", "new_state": "NEWSTATE"}


def column_name(label: str) -> str:
    """A label's column name in every table."""
    return _HEADERS.get(label, label.upper())


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def netns_cell(row: Mapping[str, Any]) -> str:
    return row.get("netns_name") or str(row.get("netns") or "-")


def metric_tables(
    rows: Sequence[Mapping[str, Any]], titles: Mapping[str, str], top: int = 20
) -> list[Table]:
    """One table per metric: its labels, the change since the last report and
    the total; histograms show count, mean and p50/p99 bucket bounds."""
    by_metric: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_metric.setdefault(row["metric"], []).append(row)
    tables = []
    for metric, group in by_metric.items():
        group = sorted(group, key=lambda r: (-r["delta"], -r.get("value", r.get("count", 0))))
        labels = [k for k in group[0] if k not in _HIDDEN]
        table = Table(title=titles.get(metric, metric), title_justify="left")
        for label in labels:
            table.add_column(column_name(label))
        histogram = "count" in group[0]
        cols = ["COUNT", "TOTAL", "MEAN", "P50<=", "P99<="] if histogram else ["DELTA", "TOTAL"]
        for c in cols:
            table.add_column(c, justify="right")
        for row in group[:top]:
            cells = [netns_cell(row) if k == "netns" else _cell(row[k]) for k in labels]
            if histogram:
                mean = row["sum"] / row["count"] if row["count"] else 0
                cells += [str(row["delta"]), str(row["count"])] + [
                    _cell(v) for v in (mean, row["p50"], row["p99"])
                ]
            else:
                cells += [_cell(row["delta"]), _cell(row["value"])]
            table.add_row(*cells)
        if len(group) > top:
            table.caption = f"{len(group) - top} more rows (use -j for all)"
        tables.append(table)
    return tables


def conn_table(conns: Sequence[Any], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("ENDPOINT", "ENDPOINT", "STATE", "OWNER"):
        table.add_column(col)
    for col in ("RETRANS", "RST SENT", "RST RECV"):
        table.add_column(col, justify="right")
    table.add_column("DROPS")
    for c in conns:
        owner = f"{c.pid}/{c.comm}" if c.pid else "-"
        drops = ", ".join(f"{r}:{n}" for r, n in c.drops.most_common()) or "0"
        table.add_row(
            hostport(*c.a),
            hostport(*c.b),
            c.state or "-",
            owner,
            str(c.retransmits),
            str(c.resets_sent),
            str(c.resets_received),
            drops,
        )
    return table


def queue_tables(
    snapshot: Mapping[str, Any], overflows: Sequence[Mapping[str, Any]]
) -> list[Table]:
    socks = Table(title="Socket queues, deepest first (sock_diag)", title_justify="left")
    for col in ("NETNS", "STATE", "LOCAL", "PEER", "RECV-Q", "SEND-Q", "PROCESS"):
        socks.add_column(col, justify="right" if col.endswith("-Q") else "left")
    for s in snapshot["sockets"]:
        socks.add_row(
            netns_cell(s),
            s["state"],
            s["local"],
            s["peer"],
            str(s["recv_q"]),
            str(s["send_q"]),
            f"{s['pid']}/{s['comm']}" if s.get("pid") else "-",
        )
    listen = Table(title="Listeners: accept queue (waiting / limit)", title_justify="left")
    for col in ("NETNS", "LOCAL", "WAITING", "LIMIT", "PROCESS"):
        listen.add_column(col, justify="right" if col in ("WAITING", "LIMIT") else "left")
    for s in snapshot["listeners"]:
        listen.add_row(
            netns_cell(s),
            s["local"],
            str(s["backlog"]),
            str(s["backlog_max"]),
            f"{s['pid']}/{s['comm']}" if s.get("pid") else "-",
        )
    qd = Table(title="qdiscs (tc stats)", title_justify="left")
    for col in (
        "NETNS",
        "DEV",
        "KIND",
        "HANDLE",
        "BACKLOG",
        "QLEN",
        "DROPS",
        "REQUEUES",
        "OVERLIMITS",
    ):
        qd.add_column(col)
    for q in snapshot["qdiscs"]:
        qd.add_row(
            netns_cell(q),
            q["device"],
            q["kind"],
            q["handle"],
            f"{q['backlog']}b",
            f"{q['qlen']}p",
            str(q["drops"]),
            str(q["requeues"]),
            str(q["overlimits"]),
        )
    over = Table(title="Socket buffer overflows since start", title_justify="left")
    for col in ("NETNS", "EVENT", "PROTOCOL", "PORT", "COUNT"):
        over.add_column(col)
    for r in overflows:
        over.add_row(netns_cell(r), r["event"], r["protocol"], str(r["port"]), str(r["value"]))
    return [socks, listen, qd, over]
