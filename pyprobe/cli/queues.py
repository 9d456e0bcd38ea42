"""`pyprobe queues`: the deepest socket queues now, accept backlogs, qdiscs,
and the overflows counted since the start."""

from __future__ import annotations

import time

import click

from ..core.text import json_line
from ..netns.namespaces import resolve_netns
from ..views.tables import print_tables, queue_tables, rtt_table
from ..views.watch import intervals
from .common import (
    CONTEXT,
    LOADING,
    Documented,
    attached,
    format_option,
    interval_args,
    netns_option,
    top_option,
)


@click.command(cls=Documented, context_settings=CONTEXT, environment=LOADING)
@netns_option
@format_option
@top_option(default=10, help="Sockets and listeners shown.")
@click.option(
    "--rtt",
    is_flag=True,
    help="Also each namespace's established sockets' smoothed RTT and congestion "
    "window (tcp_info, as ss -ti): count, p50, p99, max.",
)
@interval_args
def queues(
    netns: str | None,
    as_json: bool,
    top: int,
    rtt: bool,
    interval: float | None,
    count: int | None,
) -> None:
    """Deepest socket queues (Recv-Q/Send-Q), accept backlogs, qdisc backlogs, overflows.

    \b
    Recv-Q/Send-Q as `ss` shows them, per namespace, with the owning process;
    for listeners, connections waiting to be accepted and the limit. Qdiscs
    from tc stats. Overflows (receive queue full, memory limits) are counted
    in the kernel since the start. Without INTERVAL: one report now.

    \b
    Examples:
      pyprobe queues                     # once: deepest sockets, backlogs, qdiscs
      pyprobe queues --netns blue --rtt 5
      pyprobe queues -n 50 --format plain | sort -k5 -n
    """
    inode = resolve_netns(netns) if netns else None
    with attached("queues", features=["rtt"] if rtt else ()) as probe:
        probe.netns = inode

        def report(n: int) -> None:
            snapshot = probe.top(top)
            overflows = probe.overflows()
            rtts = probe.rtt_rows() if rtt else None
            if as_json:
                extra = {} if rtts is None else {"rtt": rtts}
                print(
                    json_line({"time": time.time(), **snapshot, "overflows": overflows, **extra}),
                    flush=True,
                )
            else:
                print_tables(queue_tables(snapshot, overflows))
                if rtts is not None:
                    print_tables([rtt_table(rtts)])

        intervals(report, interval, count, first_now=True)


COMMANDS = (queues,)
