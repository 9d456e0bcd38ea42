"""`pyprobe conn`: connections in trouble, three streams joined."""

from __future__ import annotations

import sys
import threading
import time

import click

from ..core.sizes import RINGBUF_PAGES_ENV
from ..core.text import json_line
from ..views.conn import ConnView
from ..views.tables import conn_table, print_tables
from ..views.watch import intervals
from .common import (
    CONTEXT,
    LOADING,
    Documented,
    attached_many,
    format_option,
    interval_args,
    top_option,
)

STREAMS = ("tcpretrans", "drops", "tcpstates")


@click.command(cls=Documented, context_settings=CONTEXT, environment=(*LOADING, RINGBUF_PAGES_ENV))
@format_option
@top_option
@interval_args
def conn(as_json: bool, top: int, interval: float | None, count: int | None) -> None:
    """Connections in trouble: per connection, its retransmits, resets and drops.

    \b
    Joins the tcpretrans, drops and tcpstates streams by the connection's two
    endpoints (both directions, both namespaces of a local connection), with
    its current state and owning process. Every INTERVAL seconds (default: at
    Ctrl-C), the connections with the most failures.

    \b
    Examples:
      pyprobe conn                       # until Ctrl-C, then the connections in trouble
      pyprobe conn 5 12                  # every 5 s for a minute
      pyprobe conn -j 10 1 | jq .        # one report after 10 s, as JSON
    """
    view = ConnView()
    with attached_many(list(STREAMS), streams=STREAMS) as probes:
        intro = "Joining retransmits, resets and drops per connection... " + (
            "Ctrl-C to end" if interval is None else f"every {interval:g}s"
        )

        def read(seconds: float, end: threading.Event) -> None:
            """The streams, until the next report is due (or Ctrl-C)."""
            due = time.monotonic() + seconds
            while time.monotonic() < due and not end.is_set():
                for name, probe in probes.items():
                    view.feed(name, probe.events(timeout_ms=30))

        def report(n: int) -> None:
            for name, probe in probes.items():
                view.feed(name, probe.events(timeout_ms=0))
            failing = view.failing(top)
            if as_json:
                print(
                    json_line({"time": time.time(), "connections": [c.record() for c in failing]})
                )
            else:
                print_tables([conn_table(failing, "Connections with retransmits, resets or drops")])
                lost = sum(p.lost() for p in probes.values())
                if lost:
                    click.echo(f"lost events: {lost}")
            sys.stdout.flush()

        intervals(report, interval, count, wait=read, intro=intro)


COMMANDS = (conn,)
