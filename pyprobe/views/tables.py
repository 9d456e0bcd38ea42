"""Rich tables: the counting commands' (a table per metric), tcpstates'
summary, the queues and the conn views; printed box-drawn on a terminal, as
plain columns elsewhere (--format: cli/common.format_option sets STYLE)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

from ..core.text import hostport, netns_cell
from ..kernel.names import TCP_STATES


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


def rtt_table(rows: Sequence[Mapping[str, Any]]) -> Table:
    """`pyprobe queues --rtt`: each namespace's established sockets' RTT and cwnd."""
    table = Table(
        title="Established sockets: smoothed RTT and cwnd (tcp_info)", title_justify="left"
    )
    for column in ("NETNS", "SOCKETS", "RTT P50", "RTT P99", "RTT MAX", "CWND P50", "CWND MIN"):
        table.add_column(column, justify="left" if column == "NETNS" else "right")
    for r in rows:
        table.add_row(
            r["netns_name"] or str(r["netns"]),
            str(r["sockets"]),
            *(f"{r[k]:.3f} ms" for k in ("rtt_ms_p50", "rtt_ms_p99", "rtt_ms_max")),
            str(r["cwnd_p50"]),
            str(r["cwnd_min"]),
        )
    return table


# How print_tables prints: "table" (box-drawn), "plain" (aligned columns:
# a title line, a header line, one line per row, as bcc's tools print, for
# awk and grep), or "auto": table on a terminal, plain when piped. The
# command's --format sets it for the process (one command per process).
STYLES = ("table", "plain")
STYLE = "auto"


def print_tables(
    tables: Iterable[Table],
    out: TextIO | None = None,
    width: int | None = None,
    style: str | None = None,
) -> None:
    console = Console(file=out, width=width, color_system=None if out else "auto", highlight=False)
    style = style or STYLE
    if style == "auto":
        style = "table" if console.is_terminal else "plain"
    if style == "plain":
        for i, t in enumerate(tables):
            console.file.write(("\n" if i else "") + plain(t))
        console.file.flush()
        return
    if width is None and not console.is_terminal:
        console.width = 200  # piped: whole rows, not ellipses
    for t in tables:
        console.print(t)


def plain(table: Table) -> str:
    """A table as plain columns: its title, the header, the rows (an empty
    cell is "-", so every line has as many fields as the header), then its
    caption. Columns are two spaces apart, aligned as the table aligns them."""
    columns = [[str(c.header), *(str(cell) or "-" for cell in c.cells)] for c in table.columns]
    widths = [max(len(v) for v in col) for col in columns]
    lines = [str(table.title)] if table.title else []
    for n in range(len(columns[0]) if columns else 0):
        cells = []
        for col, w, spec in zip(columns, widths, table.columns, strict=True):
            value = col[n]
            cells.append(value.rjust(w) if spec.justify == "right" else value.ljust(w))
        lines.append("  ".join(cells).rstrip())
    if table.caption:
        lines.append(str(table.caption))
    return "".join(line + "\n" for line in lines)


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
