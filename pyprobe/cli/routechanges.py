"""`pyprobe route-changes`: routes and rules added and removed, in every
namespace, as they happen (`ip monitor route rule` for all of them)."""

from __future__ import annotations

import queue
import threading
import time

import click

from ..core.text import json_line
from ..netns import routewatch
from ..netns.namespaces import named_netns, netns_paths, resolve_netns
from .common import CONTEXT, Documented, json_option, netns_option


def line(inode: int, at: float, c: dict, names: dict[int, str]) -> str:
    where = names.get(inode) or str(inode)
    stamp = time.strftime("%H:%M:%S", time.localtime(at))
    if c["kind"] == "route":
        via = f" via {c['gateway']}" if c["gateway"] else ""
        dev = f" dev {c['dev']}" if c["dev"] else ""
        what = f"{c['type']} {c['dst']}{via}{dev} table {c['table']} proto {c['proto']}"
    else:
        what = f"from {c['src']} to {c['dst']} prio {c['priority']} {c['action']} {c['table']}"
    return f"{stamp} {where:<14} {c['event']:<3} {c['kind']:<5} {c['family']:<4} {what}"


@click.command("route-changes", cls=Documented, context_settings=CONTEXT)
@netns_option
@json_option
@click.option(
    "-d", "--duration", type=click.FloatRange(min=0, min_open=True), help="Stop after SECONDS."
)
def route_changes(netns: str | None, as_json: bool, duration: float | None) -> None:
    """Routes and rules added and removed, in every namespace, as they happen.

    \b
    rtnetlink announces every change itself (no hook): each namespace there
    is at the start is watched, a thread each. With the `routes` probe's
    counters, what explains a no-route burst: the route that went away.

    \b
    Examples:
      pyprobe route-changes                   # every namespace, until Ctrl-C
      pyprobe route-changes --netns h1 -d 60  # one namespace, a minute
      pyprobe route-changes -j                # NDJSON, a change a line
    """
    only = resolve_netns(netns) if netns else None
    paths = {inode: p[0] for inode, p in netns_paths().items() if only in (None, inode)}
    changes: queue.Queue = queue.Queue()
    stop = threading.Event()
    threads = routewatch.watch(dict(paths), changes, stop)
    for t in threads:
        t.ready.wait(2)  # type: ignore[attr-defined]
    click.echo(f"Watching routes and rules in {len(threads)} namespaces...", err=True)
    end = time.monotonic() + duration if duration else None
    names = named_netns()
    try:
        while end is None or time.monotonic() < end:
            try:
                inode, at, c = changes.get(timeout=0.2)
            except queue.Empty:
                continue
            if as_json:
                print(json_line({"time": at, "netns": inode, **c}), flush=True)
            else:
                names = names if inode in names else named_netns()
                print(line(inode, at, c, names), flush=True)
    finally:
        stop.set()


COMMANDS = [route_changes]
