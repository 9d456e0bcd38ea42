"""`pyprobe tcpstates` and `pyprobe tcplife`: the stream with bcc's filters
compiled into the program, and the summary (transitions counted in the
kernel, live sockets per state and namespace)."""

from __future__ import annotations

import time
from typing import Any

import click

from ..core.text import json_line
from ..errors import PyprobeError
from ..netns.namespaces import named_netns, netns_label, resolve_netns
from ..probes.tcpstates import Filters, parse_ports
from ..views.tables import metric_tables, print_tables, sockets_table, transitions_table
from ..views.watch import intervals, row_key, with_deltas
from .common import (
    CONTEXT,
    COUNT,
    DURATION,
    SECONDS,
    STREAMING,
    Documented,
    attached,
    buffer_pages_option,
    cgroup_filter,
    counts_take_no_stream_options,
    socket_filters,
)
from .counting import watch_stream


def _ports(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    try:
        return parse_ports(value)
    except PyprobeError as e:
        raise click.BadParameter(str(e)) from None


class _Names:
    """Namespace names for the stream: /run/netns re-read once for an inode
    not named yet (perhaps named since we started), not per event."""

    def __init__(self) -> None:
        self.names = named_netns()
        self.looked_up: set[int] = set()

    def __call__(self, inode: int) -> str | None:
        if inode and inode not in self.names and inode not in self.looked_up:
            self.names = named_netns()
            self.looked_up.add(inode)
        return self.names.get(inode)


def _stream(
    filters: Filters,
    as_json: bool,
    timestamp: bool,
    duration: float | None,
    pages: int | None,
    cgroup: int | None,
) -> None:
    with attached("tcpstates", pages, cgroup=cgroup, stream=True, filters=filters) as probe:
        probe.netns_name = _Names()
        what = "TCP connections closed" if filters.close_only else "TCP state changes"
        watch_stream(probe, as_json, timestamp, duration, what=what)


@click.command(cls=Documented, context_settings=CONTEXT, environment=STREAMING)
@socket_filters(ports=_ports, formats=True)
@click.option(
    "-s",
    "--summary",
    is_flag=True,
    help="Counts instead of a stream: transitions old->new and live sockets per state.",
)
@click.option(
    "-F",
    "--feature",
    "features",
    multiple=True,
    type=click.Choice(["latency"]),
    help="With --summary: latency, the time in each state by (old, new) and netns "
    "(connect latency: SYN_SENT -> ESTABLISHED), count, mean, p50 and p99.",
)
@DURATION
@buffer_pages_option
@click.argument("interval", required=False, type=SECONDS)
@click.argument("count", required=False, type=COUNT)
def tcpstates(
    pid: int | None,
    lports: tuple[int, ...],
    dports: tuple[int, ...],
    family: int | None,
    netns: str | None,
    cgroup: str | None,
    container: str | None,
    as_json: bool,
    timestamp: bool,
    summary: bool,
    features: tuple[str, ...],
    duration: float | None,
    buffer_pages: int | None,
    interval: float | None,
    count: int | None,
) -> None:
    """Trace TCP state changes, with the owning process and the time spent in each state.

    \b
    Stream columns: socket, owner PID/COMM ('*' = softirq, owner not yet seen),
    network namespace, local and remote endpoint, OLD -> NEW state, ms in OLD.
    With --summary: [INTERVAL [COUNT]] like the bcc tools; Ctrl-C ends.

    \b
    Examples:
      pyprobe tcpstates -T -D 443        # connections to remote port 443
      pyprobe tcpstates --netns blue -j  # namespace "blue" (ip netns), as NDJSON
      pyprobe tcpstates --summary 1 10   # ten one-second summaries
    """
    netns_inode = resolve_netns(netns) if netns else None
    if summary:
        if pid or lports or dports or family or cgroup or container:
            raise PyprobeError(
                "-p/-L/-D/-4/-6/--cgroup/--container filter the stream; --summary "
                "counts everything (use --netns to pick a namespace)"
            )
        counts_take_no_stream_options(
            timestamp, duration, buffer_pages, "the stream, not --summary"
        )
        _summary(netns_inode, as_json, interval, count, features)
        return
    if features:
        raise PyprobeError("-F/--feature goes with --summary (the stream times every change)")
    if interval is not None:
        raise PyprobeError("INTERVAL/COUNT go with --summary; use -d/--duration to bound a stream")
    filters = Filters(pid=pid, lports=lports, dports=dports, family=family, netns=netns_inode)
    _stream(filters, as_json, timestamp, duration, buffer_pages, cgroup_filter(cgroup, container))


@click.command(cls=Documented, context_settings=CONTEXT, environment=STREAMING)
@socket_filters(ports=_ports)
@DURATION
@buffer_pages_option
def tcplife(
    pid: int | None,
    lports: tuple[int, ...],
    dports: tuple[int, ...],
    family: int | None,
    netns: str | None,
    cgroup: str | None,
    container: str | None,
    as_json: bool,
    timestamp: bool,
    duration: float | None,
    buffer_pages: int | None,
) -> None:
    """Trace TCP connections as they close: their lifespan and the bytes moved.

    \b
    Columns (bcc's tcplife, with the namespace): owner PID/COMM, network
    namespace, local and remote endpoint, KiB sent and acknowledged (TX) and
    received (RX) over the connection's life (tcp_sock's counters, at offsets
    from BTF), and its age in ms ('-': opened before pyprobe started). One
    line per socket: a connection between two local ends shows both.
    The same program as `tcpstates`, reporting only the changes to CLOSE;
    -j gives tcpstates' NDJSON objects (life_ms, rx_bytes, tx_bytes).

    \b
    Examples:
      pyprobe tcplife -D 443          # connections to remote port 443
      pyprobe tcplife -j -d 10        # ten seconds of closes, as NDJSON
    """
    netns_inode = resolve_netns(netns) if netns else None
    filters = Filters(
        pid=pid, lports=lports, dports=dports, family=family, netns=netns_inode, close_only=True
    )
    _stream(filters, as_json, timestamp, duration, buffer_pages, cgroup_filter(cgroup, container))


LATENCY_TITLE = "Time in state (s), by old -> new state: exp2 bucket bounds"


def _summary(
    netns: int | None,
    as_json: bool,
    interval: float | None,
    count: int | None,
    features: tuple[str, ...] = (),
) -> None:
    with attached("tcpstates", features=features) as probe:
        intro = f"Counting TCP state changes via {probe.hook_label}... " + (
            "Ctrl-C to end" if interval is None else f"every {interval:g}s"
        )
        previous: dict[tuple[str, str], int] = {}
        latency_before: dict[tuple, dict[str, Any]] = {}

        def report(n: int) -> None:
            nonlocal previous, latency_before
            total = probe.transitions()
            delta = {k: v - previous.get(k, 0) for k, v in total.items()}
            previous = total
            sockets = probe.live_sockets(netns)
            names = named_netns()
            by_ns = {netns_label(k, names): c for k, c in sockets.items()}
            latency = [
                r
                for r in (probe.rows() if features else ())
                if r["metric"] == "tcp_state_seconds"
                and (netns is None or str(r["netns"]) == str(netns))
            ]
            latency = with_deltas(latency, latency_before)
            latency_before = {row_key(r): r for r in latency}
            if as_json:
                transitions = [
                    {"old": o, "new": w, "count": delta.get((o, w), 0), "total": t}
                    for (o, w), t in sorted(total.items())
                ]
                record = {"time": time.time(), "transitions": transitions, "sockets": by_ns}
                if features:
                    record["latency"] = latency
                print(json_line(record), flush=True)
            else:
                print_tables(
                    [
                        transitions_table(delta, total, "TCP state transitions"),
                        sockets_table(by_ns, "Live TCP sockets per network namespace (sock_diag)"),
                        *metric_tables(latency, {"tcp_state_seconds": LATENCY_TITLE}, 40),
                    ]
                )

        intervals(report, interval, count, intro=intro)


COMMANDS: tuple[Any, ...] = (tcpstates, tcplife)
