"""`pyprobe demo`: what `make demo` runs."""

from __future__ import annotations

import click

from ..core.sizes import RINGBUF_PAGES_ENV
from ..lab.demo import run
from .common import CONTEXT, LOADING, Documented, context


@click.command(cls=Documented, context_settings=CONTEXT, environment=(*LOADING, RINGBUF_PAGES_ENV))
@click.option(
    "--connections",
    default=40,
    type=click.IntRange(1, 10000),
    show_default=True,
    help="Connections per workload.",
)
def demo(connections: int) -> None:
    """Two namespaces joined by a veth pair, bounded TCP traffic, and what tcpstates sees.

    \b
    Examples:
      pyprobe demo                       # the lab, five workloads, what each probe sees
      pyprobe demo --connections 200
    """
    ctx = context()
    run(ctx.env(), connections, ctx.registry, ctx.loader)


COMMANDS = (demo,)
