"""The two ways a probe is watched from the command line.

stream():    per-event lines (or NDJSON) from the ring buffer until Ctrl-C or a
             duration; at the end, the events still buffered and the lost count.
             The one loop over a stream.
intervals(): [INTERVAL [COUNT]] like the bcc tools: every INTERVAL seconds the
             counts since the previous one and the totals; without INTERVAL,
             one report at Ctrl-C. The one loop of every counting view.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TextIO

from ..core.probe import Probe
from ..core.text import clock, json_line, quoted

Row = dict[str, Any]


def stream(
    probe: Probe,
    as_json: bool,
    timestamp: bool,
    duration: float | None,
    keep: Callable[[Mapping[str, Any]], bool] | None = None,
    out: TextIO | None = None,
    what: str = "",
) -> None:
    """Print a probe's events until the duration ends or Ctrl-C: its text
    lines (probe.line) or NDJSON. NDJSON is made from the records as they
    are unpacked (probe.json_lines), or in C (probe.native_json) where it
    can be, unless `keep` must see each event as a dict first."""
    out = out or sys.stdout
    deadline = time.monotonic() + duration if duration else None
    quoted_name = lambda inode: quoted(probe.netns_name(inode))  # noqa: E731
    native = probe.native_json(quoted_name) if as_json and keep is None else None
    by_rows = as_json and keep is None and native is None
    if by_rows:
        probe.want_rows()

    def emit(events: list[dict[str, Any]]) -> None:
        # One write per batch: at 100k+ events/s a write per line costs more
        # than formatting it.
        wanted = [ev for ev in events if keep is None or keep(ev)]
        if as_json:
            text = "".join([json_line(ev) + "\n" for ev in wanted])
        else:
            stamp = (lambda ev: f"{clock(ev['time'])} ") if timestamp else (lambda ev: "")
            text = "".join([stamp(ev) + probe.line(ev) + "\n" for ev in wanted])
        if text:
            out.write(text)
            out.flush()

    until = f"Ending after {duration:g}s" if duration else "Ctrl-C to end"

    def emit_bytes(data: bytes) -> None:
        if data:
            binary = getattr(out, "buffer", None)
            if binary is None:
                out.write(data.decode())
            else:
                out.flush()  # what the text layer holds goes first
                binary.write(data)
                binary.flush()

    def step(timeout_ms: int) -> None:
        if native is not None:
            emit_bytes(native(timeout_ms))
        elif by_rows:
            rows = probe.event_rows(timeout_ms)
            if rows:
                out.write(probe.json_lines(rows, quoted_name))
                out.flush()
        else:
            emit(probe.events(timeout_ms))

    with ctrl_c_ends() as end:
        print(
            f"Tracing {what or probe.name} via {probe.hook_label}... {until}.",
            file=sys.stderr,
            flush=True,
        )
        if not as_json:
            print(("TIME     " if timestamp else "") + probe.header(), file=out, flush=True)
        try:
            while not end.is_set() and (deadline is None or time.monotonic() < deadline):
                step(100)
        finally:
            step(0)  # what is still buffered
            lost = probe.lost()
            print(
                f"lost events: {lost}" + (" (ring buffer full)" if lost else ""),
                file=sys.stderr,
                flush=True,
            )


_MEASURES = ("value", "count", "sum", "buckets", "delta", "p50", "p99")


def row_key(row: Mapping[str, Any]) -> tuple:
    return tuple((k, v) for k, v in row.items() if k not in _MEASURES)


def with_deltas(rows: list[Row], previous: Mapping[tuple, Row]) -> list[Row]:
    """Each row with `delta`: its growth since the previous report."""
    out = []
    for row in rows:
        before = previous.get(row_key(row), {})
        field = "value" if "value" in row else "count"
        out.append({**row, "delta": row[field] - before.get(field, 0)})
    return out


def intervals(
    report: Callable[[int], None],
    interval: float | None,
    count: int | None,
    wait: Callable[[float, threading.Event], None] | None = None,
    first_now: bool = False,
    intro: str = "",
) -> None:
    """Call report(n) every interval seconds, count times; without an
    interval, once at Ctrl-C (or, first_now, once at once). wait(seconds,
    end) is what is done between reports (conn: reading the streams; it
    returns early once `end` is set). Ctrl-C ends it as the bcc tools end:
    the report of what came since the last one, then done. intro goes to
    stderr once Ctrl-C means that."""
    with ctrl_c_ends() as end:
        if intro:
            print(intro, file=sys.stderr, flush=True)
        n = 0
        while True:
            if not (first_now and n == 0):
                seconds = interval if interval is not None else float("inf")
                if wait is None:
                    end.wait(None if seconds == float("inf") else seconds)
                else:
                    wait(seconds, end)
            report(n)
            n += 1
            if end.is_set() or interval is None or (count is not None and n >= count):
                return


@contextlib.contextmanager
def ctrl_c_ends() -> Iterator[threading.Event]:
    """Within the block, Ctrl-C (SIGINT) asks the command to end, by setting
    the event: the command then prints its last report whole. More SIGINTs
    (`timeout -s INT` signals the process and its group: two) are ignored
    from then on, until the process exits (cli.main restores the handler
    only for a caller that outlives it). Before the block, Ctrl-C interrupts
    (KeyboardInterrupt): nothing was shown yet."""
    end = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield end
        return

    def requested(signum: int, frame: Any) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        end.set()

    previous = signal.signal(signal.SIGINT, requested)
    try:
        yield end
    finally:
        if not end.is_set():
            signal.signal(signal.SIGINT, previous)
