"""`pyprobe trace FILTER`: each matching packet's hops through devices and
namespaces, and how it ended (views/trace.py; the probe: probes/trace.toml)."""

from __future__ import annotations

import sys
from contextlib import ExitStack

import click

from ..core.pcapfilter import Filter, compile_filter
from ..core.sizes import RINGBUF_PAGES_ENV
from ..errors import PyprobeError
from ..views import pcapng
from ..views import trace as view
from ..views.watch import ctrl_c_ends
from .common import (
    CONTEXT,
    COUNT,
    LOADING,
    SECONDS,
    SECONDS_OR_NEVER,
    Documented,
    attached,
    buffer_pages_option,
    json_option,
)


@click.command(cls=Documented, context_settings=CONTEXT, environment=(*LOADING, RINGBUF_PAGES_ENV))
@click.argument("expression", nargs=-1, required=True)
@json_option
@click.option("-c", "--count", type=COUNT, help="Stop after this many packets.")
@click.option("-d", "--duration", type=SECONDS, help="Stop after this many seconds.")
@click.option(
    "--idle",
    type=SECONDS,
    default=1.0,
    show_default=True,
    help="Show a packet that was neither freed nor dropped after this long without a hop.",
)
@click.option(
    "--rest-after",
    type=SECONDS_OR_NEVER,
    default=10.0,
    show_default=True,
    help="After this long with no packet matching, detach the hooks that only follow "
    "a packet (the filter still runs where packets enter); the next match attaches "
    "them again in a few ms, and that packet is followed from then on. 0: never.",
)
@click.option(
    "-w",
    "--pcap",
    type=click.Path(dir_okay=False, writable=True),
    help="Also write the packets to this pcapng file (how each ended as its comment).",
)
@buffer_pages_option
def trace(
    expression: tuple[str, ...],
    as_json: bool,
    count: int | None,
    duration: float | None,
    idle: float,
    rest_after: float,
    pcap: str | None,
    buffer_pages: int | None,
) -> None:
    """Follow each packet a pcap filter matches through devices and namespaces.

    \b
    EXPRESSION is a pcap-filter expression (man pcap-filter), as tcpdump takes
    it; libpcap compiles it and pyprobe runs it in the kernel, on the first
    256 bytes of each packet where it enters a device's path (queued for
    transmit, received). A matching packet is then followed by its sk_buff:
    every hop with the time since it was first seen, its namespace, device
    (and kind: veth, bridge, vxlan...) and what happened there, to where it
    was freed or dropped (with the kernel's reason); through a tunnel and
    into its clones (a raw socket's copy) by its identity (addresses, IP
    ID, ports). Tracepoints only: no kprobes needed. An expression that
    cannot be run exactly is refused.

    \b
    Examples:
      pyprobe trace icmp                       # every ICMP packet
      pyprobe trace -c 5 'host 10.0.0.2 and tcp port 80'
      pyprobe trace -j -d 10 'udp port 53'     # NDJSON, a packet a line, for 10 s
      pyprobe trace -w drops.pcapng icmp       # and a file for Wireshark or tcpdump -r
    """
    text = " ".join(expression)
    compiled = compile_filter(text)  # a refused expression: one line, before anything loads
    tracker = view.Tracker(view.DeviceKinds(), idle=idle)
    with ExitStack() as files:
        writer = None
        if pcap is not None:
            try:
                writer = pcapng.Writer(files.enter_context(open(pcap, "wb")))
            except OSError as e:
                raise PyprobeError(f"--pcap {pcap}: {e.strerror}") from None
        _trace(text, compiled, tracker, as_json, count, duration, buffer_pages, writer, rest_after)


def _trace(
    text: str,
    compiled: Filter,
    tracker: view.Tracker,
    as_json: bool,
    count: int | None,
    duration: float | None,
    buffer_pages: int | None,
    writer: pcapng.Writer | None,
    rest_after: float,
) -> None:
    with attached(
        "trace", buffer_pages=buffer_pages, options={"expression": compiled}, stream=True
    ) as probe:
        probe.rest_after = rest_after or None
        if not as_json:
            click.echo(f"Tracing packets matching {text!r}... Ctrl-C to end", err=True)
        with ctrl_c_ends() as end:
            shown = view.run(probe, tracker, sys.stdout, as_json, count, duration, end, writer)
        lost = probe.lost()
        if lost:
            click.echo(f"lost hops: {lost} (ring buffer full: -b raises it)", err=True)
        if tracker.late:
            click.echo(
                f"{tracker.late} hops came after their packet was shown (--idle waits longer)",
                err=True,
            )
        if not as_json:
            click.echo(f"{shown} packets", err=True)


COMMANDS = (trace,)
