"""`pyprobe nat`: the NAT mappings conntrack holds, per namespace, as the
notes draw them: a connection's tuple as it left (original) and as its
replies come back (reply)."""

from __future__ import annotations

import click
from rich.table import Table

from ..core.text import json_line
from ..netns import conntrack
from ..netns.namespaces import each_netns, named_netns, resolve_netns
from ..views.tables import print_tables
from .common import CONTEXT, Documented, format_option, netns_option


def _endpoint(addr: str, port: int) -> str:
    return f"{addr}:{port}" if port else addr


@click.command(cls=Documented, context_settings=CONTEXT)
@netns_option
@format_option
@click.option("-a", "--all", "every", is_flag=True, help="Every tracked connection, NATed or not.")
@click.option(
    "-z", "--zones", is_flag=True,
    help="Count every tracked connection by netns and conntrack zone instead (one table dump).",
)  # fmt: skip
def nat(netns: str | None, as_json: bool, every: bool, zones: bool) -> None:
    """NAT mappings: each NATed connection's original and reply tuples, per netns.

    \b
    What conntrack keeps (ctnetlink): SNAT and masquerade rewrite the source
    (and its port: PAT), DNAT the destination (a port forward). For a
    masqueraded connection the reply goes to the router's own address and
    port; for a port forward it comes from the inside host. `pyprobe
    conntrack` counts the tables (entries against the limit, drops, insert
    failures).

    \b
    Examples:
      pyprobe nat                        # every namespace's NAT mappings
      pyprobe nat --netns rt -a          # everything rt's conntrack tracks
      pyprobe nat -j | jq -r .reply_src   # NDJSON, a mapping a line
      pyprobe nat -z                     # connections per netns and zone
    """
    only = resolve_netns(netns) if netns else None
    if zones:
        _zones(only, as_json)
        return
    found = each_netns(lambda: conntrack.connections(nat_only=not every), only=only)
    names = named_netns()
    if as_json:
        for inode, conns in found.items():
            for c in conns:
                print(json_line({"netns": inode, "netns_name": names.get(inode, ""), **c}))
        return
    table = Table(title="NAT mappings (conntrack)", title_justify="left")
    for column in ("NETNS", "PROTO", "STATE", "NAT", "ORIGINAL", "REPLY", "TIMEOUT"):
        table.add_column(column, justify="right" if column == "TIMEOUT" else "left")
    for inode, conns in found.items():
        for c in conns:
            table.add_row(
                names.get(inode) or str(inode),
                c["proto"],
                c["state"],
                c["nat"] or "-",
                f"{_endpoint(c['orig_src'], c['orig_sport'])} -> "
                f"{_endpoint(c['orig_dst'], c['orig_dport'])}",
                f"{_endpoint(c['reply_src'], c['reply_sport'])} -> "
                f"{_endpoint(c['reply_dst'], c['reply_dport'])}",
                f"{c['timeout']} s",
            )
    print_tables([table])


def _zones(only: int | None, as_json: bool) -> None:
    """Tracked connections per namespace and zone (namespaces tracking none left out)."""
    found = each_netns(conntrack.zones, only=only)
    names = named_netns()
    rows = [(inode, zone, n) for inode, counts in found.items() for zone, n in counts.items()]
    if as_json:
        for inode, zone, n in rows:
            record = {"netns": inode, "netns_name": names.get(inode, ""), "zone": zone}
            print(json_line({**record, "entries": n}))
        return
    table = Table(title="Conntrack entries by zone", title_justify="left")
    for column in ("NETNS", "ZONE", "ENTRIES"):
        table.add_column(column, justify="left" if column == "NETNS" else "right")
    for inode, zone, n in rows:
        table.add_row(names.get(inode) or str(inode), str(zone), str(n))
    print_tables([table])


COMMANDS = [nat]
