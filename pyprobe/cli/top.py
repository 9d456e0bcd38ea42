"""`pyprobe top`: every probe at once, refreshed in place."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.live import Live

from ..errors import PyprobeError
from ..views.top import TopView, keypresses, quit_pressed
from ..views.watch import intervals
from .common import (
    CONTEXT,
    COUNT,
    LOADING,
    Documented,
    Seconds,
    attached_many,
    complete_probes,
    context,
)


@click.command("top", cls=Documented, context_settings=CONTEXT, environment=LOADING)
@click.option(
    "-i",
    "--interval",
    default=1.0,
    show_default=True,
    type=Seconds(0.1),
    help="Seconds between refreshes.",
)
@click.option("-c", "--count", type=COUNT, help="Stop after this many refreshes.")
@click.option(
    "--probe",
    "only",
    multiple=True,
    shell_complete=complete_probes,
    help="Only these probes (repeat); NAME.FEATURE turns a feature on (NAME.all: every "
    "one); default: every probe that can run here, with its default features.",
)
def top(interval: float, count: int | None, only: tuple[str, ...]) -> None:
    """Every probe at once, refreshed in place: rates per second, busiest first.

    \b
    Full-screen on a terminal (q or Ctrl-C to quit); printed frame after frame
    when the output is not a terminal.

    \b
    Examples:
      pyprobe top                        # every probe this kernel allows
      pyprobe top --probe drops --probe tcpretrans -i 2
      pyprobe top --probe netdev.sizes -c 30
    """
    ctx = context()
    chosen = ctx.registry.select(only)
    if only:  # asked for by name: one this kernel cannot run is an error
        env = ctx.env()
        for name, features in chosen.items():
            how, why = ctx.registry.create(name, env, None, features).runs_here()
            if how is None:
                raise PyprobeError(f"{name}: {why}")
    with attached_many(chosen, skip_unavailable=True) as probes:
        view = TopView(probes)
        console = Console()
        if console.is_terminal and count is None:
            with (
                keypresses() as keys,
                Live(view.frame(), console=console, screen=True, auto_refresh=False) as live,
            ):
                while not quit_pressed(keys, interval):
                    live.update(view.frame(), refresh=True)
            return
        view.frame()  # the baseline for the first rates

        def show(n: int) -> None:
            Console(width=max(console.width, 160)).print(view.frame())
            sys.stdout.flush()

        intervals(show, interval, count if count is not None else 10**9)


COMMANDS = (top,)
