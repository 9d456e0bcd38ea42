"""The two ways a probe is watched from the command line.

stream():    per-event lines (or NDJSON) from the ring buffer until Ctrl-C or a
             duration; at the end, the events still buffered and the lost count.
intervals(): [INTERVAL [COUNT]] like the bcc tools: every INTERVAL seconds the
             counts since the previous one and the totals; without INTERVAL,
             one report at Ctrl-C.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from .probe import Probe
from .render import clock, ndjson

Row = dict[str, Any]


def stream(
    probe: Probe,
    line: Callable[[Mapping[str, Any]], str],
    header: str,
    as_json: bool,
    timestamp: bool,
    duration: float | None,
    keep: Callable[[Mapping[str, Any]], bool] = lambda ev: True,
    out: TextIO | None = None,
    json_line: Callable[[Mapping[str, Any]], str] = ndjson,
    what: str = "",
    json_rows: Callable[[list[tuple]], str] | None = None,
    ndjson_source: Callable[[int], bytes] | None = None,
) -> None:
    """Print a probe's events until the duration ends or Ctrl-C. json_rows,
    given, formats a batch of undecoded rows (Probe.event_rows) for --json: the
    fast path of a busy stream; ndjson_source(timeout_ms), given, waits and
    returns the --json lines themselves (made in C, ndjson.py), the fastest.
    `keep` applies to neither."""
    out = out or sys.stdout
    deadline = time.monotonic() + duration if duration else None
    native = as_json and ndjson_source is not None
    by_rows = as_json and not native and json_rows is not None and probe.want_rows()

    def emit(events: list[dict[str, Any]]) -> None:
        # One write per batch: at 100k+ events/s a write per line costs more
        # than formatting it.
        if as_json:
            text = "".join([json_line(ev) + "\n" for ev in events if keep(ev)])
        else:
            text = "".join(
                [
                    (f"{clock(ev['time'])} " if timestamp else "") + line(ev) + "\n"
                    for ev in events
                    if keep(ev)
                ]
            )
        if text:
            out.write(text)
            out.flush()

    ending = f"Ending after {duration:g}s" if duration else "Ctrl-C to end"
    print(
        f"Tracing {what or probe.name} via {probe.hook_label}... {ending}.",
        file=sys.stderr,
        flush=True,
    )
    if not as_json:
        print(("TIME     " if timestamp else "") + header, file=out, flush=True)

    def emit_rows(rows: list[tuple]) -> None:
        assert json_rows is not None
        if rows:
            out.write(json_rows(rows))
            out.flush()

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
        if native:
            assert ndjson_source is not None
            emit_bytes(ndjson_source(timeout_ms))
        elif by_rows:
            emit_rows(probe.event_rows(timeout_ms))
        else:
            emit(probe.events(timeout_ms))

    try:
        while deadline is None or time.monotonic() < deadline:
            step(100)
    finally:
        step(0)
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
) -> None:
    """Call report(n) every interval seconds, count times (or once at Ctrl-C)."""
    n = 0
    while True:
        try:
            time.sleep(interval if interval is not None else 1e9)
        except KeyboardInterrupt:
            if interval is not None:
                raise
        report(n)
        n += 1
        if interval is None or (count is not None and n >= count):
            return
