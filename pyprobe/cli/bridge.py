"""`pyprobe bridge`: every bridge's forwarding database, per namespace, as
`bridge fdb` prints it, with each port's STP state; `pyprobe fdb` counts
the changes to it (learned, moved, deleted)."""

from __future__ import annotations

import time

import click
from rich.table import Table

from ..core.text import json_line
from ..netns import bridges
from ..netns.namespaces import each_netns, named_netns, resolve_netns
from ..views.tables import print_tables
from ..views.watch import intervals
from .common import CONTEXT, Documented, format_option, interval_args, netns_option


@click.command(cls=Documented, context_settings=CONTEXT)
@netns_option
@format_option
@click.option("-a", "--all", "every", is_flag=True, help="Permanent entries too (the ports' own).")
@interval_args
def bridge(
    netns: str | None, as_json: bool, every: bool, interval: float | None, count: int | None
) -> None:
    """Bridges' MAC tables: each address, its port, VLAN, kind, age, the port's STP state.

    \b
    `bridge fdb show` for every namespace at once (rtnetlink): learned
    entries by default (-a: the permanent ones too), with how long since each
    was last used, and the STP state of its port (a blocking port learns
    nothing). Every INTERVAL seconds with INTERVAL; once without.

    \b
    Examples:
      pyprobe bridge                     # every bridge's learned addresses, once
      pyprobe bridge -a 2                # with permanent entries, every 2 s
    """
    only = resolve_netns(netns) if netns else None

    def report(n: int) -> None:
        found = each_netns(bridges.fdb, only=only)
        names = named_netns()
        rows = [
            {"netns": inode, "netns_name": names.get(inode, ""), **e}
            for inode, entries in found.items()
            for e in entries
            if every or e["kind"] != "permanent"
        ]
        if as_json:
            for r in rows:
                print(json_line({"time": time.time(), **r}), flush=True)
            return
        table = Table(title="Bridge forwarding databases", title_justify="left")
        for column in ("NETNS", "BRIDGE", "PORT", "MAC", "VLAN", "KIND", "STP", "USED"):
            table.add_column(column, justify="right" if column in ("VLAN", "USED") else "left")
        for r in sorted(rows, key=lambda r: (r["netns_name"], r["bridge"], r["port"], r["mac"])):
            table.add_row(
                r["netns_name"] or str(r["netns"]),
                r["bridge"],
                r["port"] or "(self)",
                r["mac"],
                str(r["vlan"] or ""),
                r["kind"],
                r["stp_state"],
                f"{r['used_s']:.1f} s",
            )
        print_tables([table])

    intervals(report, interval, count, first_now=True)


COMMANDS = [bridge]
