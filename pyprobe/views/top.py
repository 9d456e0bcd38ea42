"""`pyprobe top`: every probe at once, refreshed in place, for the person
debugging. Each panel is one metric's per-second rate, grouped by the labels
that matter at a glance (the rest summed), busiest first: the panels come
from the manifests (a metric's `top`), the tables beside them from plug-ins."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import termios
import time
import tty
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from ..core.probe import Probe
from ..core.probe import Table as ProbeTable
from ..core.text import netns_cell
from .tables import column_name


@dataclass(frozen=True)
class Panel:
    title: str
    probe: str
    metric: str
    labels: tuple[str, ...]
    unit: str = "/s"
    scale: float = 1.0  # e.g. 100: seconds per second -> percent


def panels(probes: Mapping[str, Probe]) -> list[Panel]:
    """Each probe's metrics that have a `top` panel in its manifest (a
    counter has one unless it says `top = false`), by the probes' rank."""
    ranked = sorted(probes.items(), key=lambda item: (item[1].manifest.rank, item[0]))
    return [
        Panel(m.top.title, name, m.name, m.top.by, m.top.unit, m.top.scale)
        for name, probe in ranked
        for m in probe.manifest.metrics
        if m.top is not None and (not m.feature or m.feature in probe.features)
    ]


def _rate(value: float, unit: str) -> str:
    for cutoff, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= cutoff:
            return f"{value / cutoff:.1f}{suffix}{unit}"
    if value % 1 == 0:
        return f"{value:.0f}{unit}"
    if abs(value) < 0.05:  # not "0.0": a little is not nothing
        return f"<0.1{unit}"
    return f"{value:.1f}{unit}"


class TopView:
    def __init__(self, probes: Mapping[str, Probe], rows_per_panel: int = 6) -> None:
        self.probes = probes
        self.panels = panels(probes)
        self.rows_per_panel = rows_per_panel
        self._previous: dict[tuple, float] | None = None  # None: no frame yet
        self._at = time.monotonic()

    def _grouped(self, panel: Panel, rows: Sequence[Mapping[str, Any]]) -> dict[tuple, float]:
        hides = self.probes[panel.probe].hides
        out: dict[tuple, float] = {}
        for row in rows:
            if row["metric"] != panel.metric or hides(row):
                continue
            key = tuple(
                netns_cell(row) if k == "netns" else str(row.get(k, "")) for k in panel.labels
            )
            out[key] = out.get(key, 0.0) + float(row["value"])
        return out

    def frame(self) -> RenderableType:
        now = time.monotonic()
        dt = max(now - self._at, 1e-3)
        self._at = now
        rows_by_probe = {name: p.rows() for name, p in self.probes.items()}
        current: dict[tuple, float] = {}
        previous = self._previous
        tables = []
        for panel in self.panels:
            if panel.probe not in rows_by_probe:
                continue
            grouped = self._grouped(panel, rows_by_probe[panel.probe])
            rates = []
            for key, total in grouped.items():
                current[(panel.metric, *key)] = total
                if previous is None:
                    rate = 0.0  # the first frame: no earlier reading to compare with
                else:  # a series that appeared since the last frame started at 0
                    rate = (total - previous.get((panel.metric, *key), 0.0)) / dt
                rates.append((key, rate * panel.scale, total))
            rates.sort(key=lambda r: (-r[1], -r[2]))
            table = Table(title=panel.title, title_justify="left", expand=False)
            for label in panel.labels:
                table.add_column(column_name(label), overflow="fold", max_width=24)
            table.add_column("RATE", justify="right")
            table.add_column("TOTAL", justify="right")
            for key, rate, total in rates[: self.rows_per_panel]:
                table.add_row(*key, _rate(rate, panel.unit), _rate(total, "").rstrip())
            if not rates:
                table.add_row(*(["-"] * len(panel.labels)), "0", "0")
            tables.append(table)
        self._previous = current
        extra = [_table(t) for p in self.probes.values() for t in p.tables(self.rows_per_panel)]
        header = Text(
            f"pyprobe top — {time.strftime('%H:%M:%S')} — every {dt:.1f}s — "
            + ", ".join(f"{n}:{p.hook_label.split(':')[0]}" for n, p in self.probes.items()),
            style="bold",
        )
        return Group(header, Columns([*tables, *extra], equal=False, expand=False))


def _table(t: ProbeTable) -> Table:
    table = Table(title=t.title, title_justify="left")
    for col in t.columns:
        table.add_column(col, justify="right" if col in t.right else "left")
    for row in t.rows:
        table.add_row(*row)
    return table


@contextlib.contextmanager
def keypresses(stream: TextIO | None = None) -> Iterator[int | None]:
    """The terminal's keys, one at a time and not echoed, while the view is
    up (cbreak mode; restored on the way out, however it is left). None
    when stdin is not a terminal: the view then quits on Ctrl-C only."""
    stream = stream if stream is not None else sys.stdin
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        yield None
        return
    if not os.isatty(fd):
        yield None
        return
    old = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield fd
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, old)


QUIT_KEYS = b"qQ"


def quit_pressed(fd: int | None, timeout: float) -> bool:
    """Wait up to `timeout` seconds; True as soon as q is typed on `fd`."""
    deadline = time.monotonic() + timeout
    while fd is not None and (left := deadline - time.monotonic()) > 0:
        if not select.select([fd], [], [], left)[0]:
            return False
        data = os.read(fd, 64)
        if not data:  # end of input: nothing more will come, only the clock
            break
        if any(key in QUIT_KEYS for key in data):
            return True
    time.sleep(max(0.0, deadline - time.monotonic()))
    return False
