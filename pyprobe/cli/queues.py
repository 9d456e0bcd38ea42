"""`pyprobe queues`: the deepest socket queues now, accept backlogs, qdiscs,
and the overflows counted since the start."""

from __future__ import annotations

import time

import click

from ..core.text import json_line
from ..netns.namespaces import resolve_netns
from ..views.tables import print_tables, queue_tables
from ..views.watch import intervals
from .common import (
    CONTEXT,
    LOADING,
    Documented,
    attached,
    interval_args,
    json_option,
    netns_option,
    top_option,
)


@click.command(cls=Documented, context_settings=CONTEXT, environment=LOADING)
@netns_option
@json_option
@top_option(default=10, help="Sockets and listeners shown.")
@interval_args
def queues(
    netns: str | None, as_json: bool, top: int, interval: float | None, count: int | None
) -> None:
    """Deepest socket queues (Recv-Q/Send-Q), accept backlogs, qdisc backlogs, overflows.

    \b
    Recv-Q/Send-Q as `ss` shows them, per namespace, with the owning process;
    for listeners, connections waiting to be accepted and the limit. Qdiscs
    from tc stats. Overflows (receive queue full, memory limits) are counted
    in the kernel since the start. Without INTERVAL: one report now.
    """
    inode = resolve_netns(netns) if netns else None
    with attached("queues") as probe:
        probe.netns = inode

        def report(n: int) -> None:
            snapshot = probe.top(top)
            overflows = probe.overflows()
            if as_json:
                print(
                    json_line({"time": time.time(), **snapshot, "overflows": overflows}), flush=True
                )
            else:
                print_tables(queue_tables(snapshot, overflows))

        intervals(report, interval, count, first_now=True)


COMMANDS = (queues,)
