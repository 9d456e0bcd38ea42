"""`pyprobe top`: every probe at once, refreshed in place."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.live import Live

from ..errors import PyprobeError
from ..views.top import TopView, keypresses, quit_pressed
from ..views.watch import intervals
from .common import CONTEXT, COUNT, LOADING, Documented, Seconds, attached_many, context


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
    help="Only these probes (repeat); default: all that can run here.",
)
def top(interval: float, count: int | None, only: tuple[str, ...]) -> None:
    """Every probe at once, refreshed in place: rates per second, busiest first.

    \b
    Full-screen on a terminal (q or Ctrl-C to quit); printed frame after frame
    when the output is not a terminal.
    """
    ctx = context()
    ctx.registry.check(only)
    if only:  # asked for by name: one this kernel cannot run is an error
        env = ctx.env()
        for name in only:
            choice = ctx.registry.create(name, env=env).available()
            if choice.hook is None:
                raise PyprobeError(f"{name}: {choice.reason}")
    names = list(only) or ctx.registry.names()
    with attached_many(names, skip_unavailable=True) as probes:
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
