"""`pyprobe demo`: what `make demo` runs."""

from __future__ import annotations

import click

from ..lab.demo import run
from .common import CONTEXT, context


@click.command(context_settings=CONTEXT)
@click.option(
    "--connections",
    default=40,
    type=click.IntRange(1, 10000),
    show_default=True,
    help="Connections per workload.",
)
def demo(connections: int) -> None:
    """Two namespaces joined by a veth pair, bounded TCP traffic, and what tcpstates sees."""
    ctx = context()
    run(ctx.env(), connections, ctx.registry, ctx.loader)


COMMANDS = (demo,)
