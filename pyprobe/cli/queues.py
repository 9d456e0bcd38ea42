"""`pyprobe queues`: the deepest socket queues now, accept backlogs, qdiscs,
and the overflows counted since the start."""

from __future__ import annotations

import time

import click

from ..core.text import json_line
from ..netns.namespaces import resolve_netns
from ..probes.queues import ACK_RTT, ACK_RTT_TITLE
from ..views.tables import metric_tables, print_tables, queue_tables, rtt_table
from ..views.watch import intervals, row_key, with_deltas
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
@click.option(
    "--ack-rtt",
    is_flag=True,
    help="Also the smoothed RTT at every segment established sockets receive, mostly ACKs "
    "(the acks feature: a tcp:tcp_probe hook, a histogram per namespace since the start).",
)
@interval_args
def queues(
    netns: str | None,
    as_json: bool,
    top: int,
    rtt: bool,
    ack_rtt: bool,
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
      pyprobe queues --ack-rtt 1 5       # srtt seen at each ACK, 5 one-second reports
      pyprobe queues -n 50 --format plain | sort -k5 -n
    """
    inode = resolve_netns(netns) if netns else None
    features = [f for f, on in (("rtt", rtt), ("acks", ack_rtt)) if on]
    with attached("queues", features=features) as probe:
        probe.netns = inode

        acks_before: dict[tuple, dict] = {}

        def report(n: int) -> None:
            snapshot = probe.top(top)
            overflows = probe.overflows()
            rtts = probe.rtt_rows() if rtt else None
            acks = with_deltas(probe.ack_rtt_rows(), acks_before) if ack_rtt else None
            acks_before.update((row_key(r), r) for r in acks or ())
            if as_json:
                extra = {} if rtts is None else {"rtt": rtts}
                if acks is not None:
                    extra["ack_rtt"] = acks
                print(
                    json_line({"time": time.time(), **snapshot, "overflows": overflows, **extra}),
                    flush=True,
                )
            else:
                print_tables(queue_tables(snapshot, overflows))
                if rtts is not None:
                    print_tables([rtt_table(rtts)])
                if acks is not None:
                    print_tables(metric_tables(acks, {ACK_RTT: ACK_RTT_TITLE}))

        intervals(report, interval, count, first_now=True)


COMMANDS = (queues,)
