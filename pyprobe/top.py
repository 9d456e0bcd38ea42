"""`pyprobe top`: every probe at once, refreshed in place, for the person
debugging. Each panel is one metric's per-second rate, grouped by the labels
that matter at a glance (the rest summed), busiest first."""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .probe import Probe
from .render import column_name, netns_cell


@dataclass(frozen=True)
class Panel:
    title: str
    probe: str
    metric: str
    labels: tuple[str, ...]
    unit: str = "/s"
    scale: float = 1.0  # e.g. 100: seconds per second -> percent


PANELS = (
    Panel(
        "TCP state changes", "tcpstates", "tcp_state_transitions_total", ("old_state", "new_state")
    ),
    Panel("Drops (benign hidden)", "drops", "drops_total", ("reason", "location", "netns")),
    Panel(
        "Retransmits (segments)", "tcpretrans", "tcp_retransmit_segments_total", ("netns", "state")
    ),
    Panel("Resets sent", "tcpretrans", "tcp_resets_sent_total", ("netns", "reason")),
    Panel("Resets received", "tcpretrans", "tcp_resets_received_total", ("netns", "state")),
    Panel("softirq runs", "softirqs", "softirqs_total", ("vector",)),
    Panel("softirq CPU", "softirqs", "softirq_seconds_total", ("vector",), "%", 100.0),
    Panel("NAPI polls", "napi", "napi_polls_total", ("netns", "device")),
    Panel("NAPI packets", "napi", "napi_packets_total", ("netns", "device")),
    Panel("RX packets", "netdev", "netdev_receive_packets_total", ("netns", "device")),
    Panel("TX packets", "netdev", "netdev_transmit_packets_total", ("netns", "device")),
    Panel("RX bytes", "netdev", "netdev_receive_bytes_total", ("netns", "device"), "B/s"),
    Panel("TX bytes", "netdev", "netdev_transmit_bytes_total", ("netns", "device"), "B/s"),
    Panel("Socket overflows", "queues", "socket_buffer_overflows_total", ("netns", "event")),
)


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
        self.rows_per_panel = rows_per_panel
        self._previous: dict[tuple, float] | None = None  # None: no frame yet
        self._at = time.monotonic()

    def _grouped(self, panel: Panel, rows: Sequence[Mapping[str, Any]]) -> dict[tuple, float]:
        out: dict[tuple, float] = {}
        for row in rows:
            if row["metric"] != panel.metric:
                continue
            if panel.probe == "drops" and self._benign(row):
                continue
            key = tuple(
                netns_cell(row) if k == "netns" else str(row.get(k, "")) for k in panel.labels
            )
            out[key] = out.get(key, 0.0) + float(row["value"])
        return out

    def _benign(self, row: Mapping[str, Any]) -> bool:
        probe = self.probes["drops"]
        is_benign = getattr(probe, "is_benign", None)
        return bool(is_benign and is_benign(row.get("reason", ""), row.get("location", "")))

    def frame(self) -> RenderableType:
        now = time.monotonic()
        dt = max(now - self._at, 1e-3)
        self._at = now
        rows_by_probe = {name: p.rows() for name, p in self.probes.items()}
        current: dict[tuple, float] = {}
        previous = self._previous
        tables = []
        for panel in PANELS:
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
        extra = self._queues()
        header = Text(
            f"pyprobe top — {time.strftime('%H:%M:%S')} — every {dt:.1f}s — "
            + ", ".join(f"{n}:{p.hook_label.split(':')[0]}" for n, p in self.probes.items()),
            style="bold",
        )
        return Group(header, Columns([*tables, *extra], equal=False, expand=False))

    def _queues(self) -> list[Table]:
        probe = self.probes.get("queues")
        if probe is None:
            return []
        top = probe.top(self.rows_per_panel, owners=False)  # type: ignore[attr-defined]
        socks = Table(title="Deepest socket queues", title_justify="left")
        for col in ("NETNS", "LOCAL", "PEER", "RECV-Q", "SEND-Q"):
            socks.add_column(col, justify="right" if col.endswith("-Q") else "left")
        for s in top["sockets"]:
            socks.add_row(netns_cell(s), s["local"], s["peer"], str(s["recv_q"]), str(s["send_q"]))
        for s in top["listeners"]:
            if s["backlog"]:
                socks.add_row(
                    netns_cell(s),
                    s["local"],
                    "(accept queue)",
                    str(s["backlog"]),
                    str(s["backlog_max"]),
                )
        qd = Table(title="qdisc backlog", title_justify="left")
        for col in ("NETNS", "DEV", "KIND", "BYTES", "PKTS", "DROPS"):
            qd.add_column(col)
        for q in [q for q in top["qdiscs"] if q["backlog"] or q["drops"]][: self.rows_per_panel]:
            qd.add_row(
                netns_cell(q),
                q["device"],
                q["kind"],
                str(q["backlog"]),
                str(q["qlen"]),
                str(q["drops"]),
            )
        return [socks, qd]


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
    import termios
    import tty

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
