"""pyprobe command line: one subcommand per probe, plus list, doctor, demo.

Every failure a user can cause or fix is one line on stderr and exit 2;
Ctrl-C exits 130, SIGTERM 143; probes detach on every path.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from . import __version__, netlink, registry
from . import probe as probe_mod
from .errors import PyprobeError
from .kernel import KernelEnv, mount_tracefs
from .render import (
    TCPLIFE_HEADER,
    TCPSTATE_HEADER,
    ndjson,
    print_tables,
    quoted,
    sockets_table,
    tcplife_line,
    tcpstate_line,
    transitions_table,
)

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MAX_SECONDS = 31 * 86400  # intervals and durations: a month is already absurd


class Seconds(click.ParamType):
    """A positive, finite number of seconds (click's FloatRange lets nan and
    inf through, and time.sleep() then raises)."""

    name = "seconds"

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            n = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (self.minimum < n <= MAX_SECONDS or (self.minimum and n == self.minimum)):
            low = f"at least {self.minimum:g}" if self.minimum else "above 0"
            self.fail(f"{value!r} is out of range: {low} and at most {MAX_SECONDS}", param, ctx)
        return n


SECONDS = Seconds()
COUNT = click.IntRange(1, 10**9)


def _buffer_pages(f: Any) -> Any:
    return click.option(
        "-b",
        "--buffer-pages",
        type=click.IntRange(1, 1 << 18),
        help="Ring buffer size in 4 KiB pages, a power of two "
        "(default 4096 = 16 MiB, or $PYPROBE_RINGBUF_PAGES).",
    )(f)


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so `with probe:` blocks detach."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> None:
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        _run(argv)
    finally:
        # Callers that outlive main() (tests, embedding) and processes forked
        # from them must not inherit our handler.
        signal.signal(signal.SIGTERM, previous)


def _run(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="pyprobe", standalone_mode=False)
    except PyprobeError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        _fail(e.format_message() + f" (see {_help_for(e, argv)})", 2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Terminated:
        sys.exit(143)
    except PermissionError as e:
        # Last resort: a path we may not read, named, instead of a traceback.
        _fail(f"permission denied: {e.filename or e}: run as root (or with CAP_BPF+CAP_PERFMON)", 2)
    except BrokenPipeError:
        # `pyprobe ... | head`: the reader left; not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _help_for(e: click.ClickException, argv: list[str] | None) -> str:
    """The help of the command that refused the input: `pyprobe lab up
    --help`, not the group's, for `pyprobe lab up bridge`."""
    ctx = getattr(e, "ctx", None)  # usage errors know their command
    if ctx is not None:
        return f"{ctx.command_path} --help"
    args = argv if argv is not None else sys.argv[1:]
    first = next((a for a in args if not a.startswith("-")), None)
    return f"pyprobe {first} --help" if first in cli.commands else "pyprobe --help"


def _fail(message: str, code: int) -> None:
    print(f"pyprobe: error: {message}", file=sys.stderr)
    sys.exit(code)


def _env() -> KernelEnv:
    env = KernelEnv.detect()
    if env.tracefs is None:
        # Tracepoints need tracefs; mount it when we may (like bcc does for debugfs).
        env.tracefs = mount_tracefs()
    return env


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pyprobe")
def cli() -> None:
    """Linux network observability on eBPF: TCP states, queues, drops, softirqs, NAPI.

    \b
    Examples:
      pyprobe doctor                 # what this kernel allows, and which hook each probe uses
      pyprobe tcpstates              # stream every TCP state change
      pyprobe tcpstates -j -L 80     # NDJSON, local port 80 only
      pyprobe tcpstates --summary 5  # transition counts and live sockets, every 5 s
    """


@cli.command("list")
def list_cmd() -> None:
    """The probes, one line each: name, hook it would use here, what it shows."""
    env = KernelEnv.detect()
    rows = []
    for name in registry.names():
        probe = registry.create(name, env=env)
        choice = probe.available()
        rows.append(
            (name, choice.hook.label if choice.hook else "unavailable", probe.manifest.summary)
        )
    # Columns as wide as their widest entry (a hook with four targets is ~80
    # characters): the summaries line up, one greppable line per probe.
    name_w = max(len(r[0]) for r in rows)
    hook_w = max(len(r[1]) for r in rows)
    for name, hook, summary in rows:
        click.echo(f"{name:<{name_w}}  {hook:<{hook_w}}  {summary}")


@cli.command()
def doctor() -> None:
    """Check kernel, BTF, tracefs, headers, kprobes, capabilities, and every probe's hook.

    Exits 0 when at least one probe can run here, 2 otherwise.
    """
    from .doctor import report

    ok = report(_env(), click.echo)
    sys.exit(0 if ok else 2)


@cli.command("compile")
@click.option(
    "--probe", "include", multiple=True, help="Only this probe (repeatable; default: every one)."
)
def compile_cmd(include: tuple[str, ...]) -> None:
    """Compile the programs (the exporter's, the streams') into the program cache.

    `make setup` runs it: the exporter's first start then loads them (~0.6 s)
    instead of compiling (~2-3 s), and `pyprobe tcpstates` starts in ~0.6 s
    instead of ~1.4. Each missing one is loaded, attached and detached once:
    the kernel's verifier has passed it. Exits 1 when a probe failed to
    compile here.
    """
    from .exporter.daemon import select
    from .precompile import compile_all

    outcomes = compile_all(_env(), select(include, ()))
    width = max((len(o.probe) for o in outcomes), default=0)
    for o in outcomes:
        click.echo(f"{o.probe:<{width}} {o.status:<9} {o.detail}")
    sys.exit(1 if any(o.status == "failed" for o in outcomes) else 0)


def _ports(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    from .probes.tcpstates import parse_ports

    try:
        return parse_ports(value)
    except PyprobeError as e:
        raise click.BadParameter(str(e)) from None


def _socket_filters(f: Any) -> Any:
    """The filters bcc's tcpstates and tcplife take, compiled into the program."""
    for option in reversed(
        [
            click.option(
                "-p",
                "--pid",
                type=click.IntRange(1, 1 << 22),
                help="Only this process (the socket owner).",
            ),
            click.option(
                "-L",
                "--localport",
                "lports",
                callback=_ports,
                help="Only these local ports: 80,443.",
            ),
            click.option(
                "-D", "--remoteport", "dports", callback=_ports, help="Only these remote ports."
            ),
            click.option("-4", "--ipv4", "family", flag_value=socket.AF_INET, help="Only IPv4."),
            click.option("-6", "--ipv6", "family", flag_value=socket.AF_INET6, help="Only IPv6."),
            click.option(
                "--netns", help="Only this network namespace: inode or name under /run/netns."
            ),
            click.option(
                "-j", "--json", "as_json", is_flag=True, help="NDJSON, one object per line."
            ),
            click.option("-T", "--timestamp", is_flag=True, help="Prefix each line with HH:MM:SS."),
        ]
    ):
        f = option(f)
    return f


_DURATION = click.option(
    "-d", "--duration", type=SECONDS, help="Stop the stream after this many seconds."
)


@cli.command(context_settings=CONTEXT)
@_socket_filters
@click.option(
    "-s",
    "--summary",
    is_flag=True,
    help="Counts instead of a stream: transitions old->new and live sockets per state.",
)
@_DURATION
@_buffer_pages
@click.argument("interval", required=False, type=SECONDS)
@click.argument("count", required=False, type=COUNT)
def tcpstates(
    pid: int | None,
    lports: tuple[int, ...],
    dports: tuple[int, ...],
    family: int | None,
    netns: str | None,
    as_json: bool,
    timestamp: bool,
    summary: bool,
    duration: float | None,
    buffer_pages: int | None,
    interval: float | None,
    count: int | None,
) -> None:
    """Trace TCP state changes, with the owning process and the time spent in each state.

    \b
    Stream columns: socket, owner PID/COMM ('*' = softirq, owner not yet seen),
    network namespace, local and remote endpoint, OLD -> NEW state, ms in OLD.
    With --summary: [INTERVAL [COUNT]] like the bcc tools; Ctrl-C ends.

    \b
    Examples:
      pyprobe tcpstates -T -D 443        # connections to remote port 443
      pyprobe tcpstates --netns blue -j  # namespace "blue" (ip netns), as NDJSON
      pyprobe tcpstates --summary 1 10   # ten one-second summaries
    """
    from .probes.tcpstates import Filters

    netns_inode = netlink.resolve_netns(netns) if netns else None
    if summary:
        if pid or lports or dports or family:
            raise PyprobeError(
                "-p/-L/-D/-4/-6 filter the stream; --summary counts everything "
                "(use --netns to pick a namespace)"
            )
        _counts_take_no_stream_options(
            timestamp, duration, buffer_pages, "the stream, not --summary"
        )
        _tcpstates_summary(netns_inode, as_json, interval, count)
        return
    if interval is not None:
        raise PyprobeError("INTERVAL/COUNT go with --summary; use -d/--duration to bound a stream")
    filters = Filters(pid=pid, lports=lports, dports=dports, family=family, netns=netns_inode)
    _tcpstates_stream(filters, as_json, timestamp, duration, buffer_pages)


@cli.command(context_settings=CONTEXT)
@_socket_filters
@_DURATION
@_buffer_pages
def tcplife(
    pid: int | None,
    lports: tuple[int, ...],
    dports: tuple[int, ...],
    family: int | None,
    netns: str | None,
    as_json: bool,
    timestamp: bool,
    duration: float | None,
    buffer_pages: int | None,
) -> None:
    """Trace TCP connections as they close: their lifespan and the bytes moved.

    \b
    Columns (bcc's tcplife, with the namespace): owner PID/COMM, network
    namespace, local and remote endpoint, KiB sent and acknowledged (TX) and
    received (RX) over the connection's life (tcp_sock's counters, at offsets
    from BTF), and its age in ms ('-': opened before pyprobe started). One
    line per socket: a connection between two local ends shows both.
    The same program as `tcpstates`, reporting only the changes to CLOSE;
    -j gives tcpstates' NDJSON objects (life_ms, rx_bytes, tx_bytes).

    \b
    Examples:
      pyprobe tcplife -D 443          # connections to remote port 443
      pyprobe tcplife -j -d 10        # ten seconds of closes, as NDJSON
    """
    from .probes.tcpstates import Filters

    netns_inode = netlink.resolve_netns(netns) if netns else None
    filters = Filters(
        pid=pid, lports=lports, dports=dports, family=family, netns=netns_inode, close_only=True
    )
    _tcpstates_stream(filters, as_json, timestamp, duration, buffer_pages, life=True)


@contextmanager
def _attached(name: str, buffer_pages: int | None = None, **attach: Any) -> Iterator[Any]:
    # Every command loads like the exporter: through a compiler process and
    # the program cache (forkload.py, objcache.py), so a kept program starts
    # without clang and bcc's memory never enters this process (a stream's
    # ring buffer comes back as an fd, read here from its mapping).
    loader = probe_mod.COMMAND_LOADER()
    probe = registry.create(name, env=_env(), loader=loader)
    probe.ring_pages = buffer_pages
    with probe:
        try:
            probe.attach(**attach)
        finally:
            loader.close()
        yield probe


def _tcpstates_stream(
    filters: Any,
    as_json: bool,
    timestamp: bool,
    duration: float | None,
    pages: int | None,
    life: bool = False,
) -> None:
    from .watch import stream

    names = netlink.named_netns()
    looked_up: set[int] = set()  # unnamed namespaces: rescan /run/netns once, not per event

    def name_of(inode: int) -> str | None:
        nonlocal names
        if inode and inode not in names and inode not in looked_up:
            names = netlink.named_netns()  # perhaps named since we started
            looked_up.add(inode)
        return names.get(inode)

    def line(ev: Any) -> str:
        name_of(ev["netns"])
        show = tcplife_line if life else tcpstate_line
        return show(ev, netlink.netns_label(ev["netns"], names), timestamps=False)

    with _attached("tcpstates", pages, stream=True, filters=filters) as probe:
        stream(
            probe,
            line,
            TCPLIFE_HEADER if life else TCPSTATE_HEADER,
            as_json,
            timestamp,
            duration,
            json_line=lambda ev: ndjson({**ev, "netns_name": name_of(ev["netns"])}),
            json_rows=lambda rows: probe.json_lines(rows, lambda ns: quoted(name_of(ns))),
            ndjson_source=probe.native_ndjson(lambda ns: quoted(name_of(ns))) if as_json else None,
            what="TCP connections closed" if life else "TCP state changes",
        )


def _tcpstates_summary(
    netns: int | None, as_json: bool, interval: float | None, count: int | None
) -> None:
    with _attached("tcpstates") as probe:
        print(
            f"Counting TCP state changes via {probe.hook.label}... "
            f"{'Ctrl-C to end' if interval is None else ''}",
            file=sys.stderr,
            flush=True,
        )
        from .watch import intervals

        previous: dict[tuple[str, str], int] = {}

        def report(n: int) -> None:
            nonlocal previous
            total = probe.transitions()
            delta = {k: v - previous.get(k, 0) for k, v in total.items()}
            previous = total
            sockets = probe.live_sockets(netns)
            names = netlink.named_netns()
            by_ns = {netlink.netns_label(k, names): c for k, c in sockets.items()}
            if as_json:
                transitions = [
                    {"old": o, "new": w, "count": delta.get((o, w), 0), "total": t}
                    for (o, w), t in sorted(total.items())
                ]
                record = {"time": time.time(), "transitions": transitions, "sockets": by_ns}
                print(ndjson(record), flush=True)
            else:
                print_tables(
                    [
                        transitions_table(delta, total, "TCP state transitions"),
                        sockets_table(by_ns, "Live TCP sockets per network namespace (sock_diag)"),
                    ]
                )

        intervals(report, interval, count)


# -- the counting probes --------------------------------------------------------
def _json_option(f: Any) -> Any:
    return click.option("-j", "--json", "as_json", is_flag=True, help="NDJSON output.")(f)


def _interval_args(f: Any) -> Any:
    f = click.argument("count", required=False, type=COUNT)(f)
    return click.argument("interval", required=False, type=SECONDS)(f)


def _top_option(f: Any) -> Any:
    return click.option(
        "-n",
        "--top",
        default=20,
        show_default=True,
        type=click.IntRange(1, 100000),
        help="Rows per table.",
    )(f)


def _stream_options(f: Any) -> Any:
    f = _buffer_pages(f)
    f = click.option(
        "-d",
        "--duration",
        type=SECONDS,
        help="Stop the stream after this many seconds.",
    )(f)
    f = click.option("-T", "--timestamp", is_flag=True, help="Prefix lines with HH:MM:SS.")(f)
    return click.option("--stream", is_flag=True, help="One line per event instead of counts.")(f)


def _counts(
    name: str,
    as_json: bool,
    top: int,
    interval: float | None,
    count: int | None,
    attach: dict[str, Any] | None = None,
    keep: Any = None,
    footer: Any = None,
) -> None:
    from .render import metric_tables
    from .watch import intervals, row_key, with_deltas

    with _attached(name, **(attach or {})) as probe:
        titles = {m.name: m.name for m in probe.manifest.metrics}
        print(
            f"Counting {name} via {probe.hook_label}... "
            + ("Ctrl-C to end" if interval is None else f"every {interval:g}s"),
            file=sys.stderr,
            flush=True,
        )
        previous: dict[tuple, dict[str, Any]] = {}

        def report(n: int) -> None:
            nonlocal previous
            rows = [r for r in probe.rows() if keep is None or keep(r)]
            rows = with_deltas(rows, previous)
            previous = {row_key(r): r for r in rows}
            if as_json:
                record = {"time": time.time(), "probe": name, "hook": probe.hook_label}
                print(ndjson({**record, "rows": rows}), flush=True)
            else:
                print_tables(metric_tables(rows, titles, top))
                if not rows:
                    click.echo(f"{time.strftime('%H:%M:%S')} no {name} events")
                if footer:
                    click.echo(footer(probe))

        intervals(report, interval, count)


@cli.command(context_settings=CONTEXT)
@_json_option
@_top_option
@_interval_args
def softirqs(as_json: bool, top: int, interval: float | None, count: int | None) -> None:
    """softirq runs, raises and time per CPU and vector (NET_RX, NET_TX, ...).

    \b
    The counts /proc/softirqs keeps, plus the time each vector took and a
    histogram of time per run. [INTERVAL [COUNT]]: like the bcc tools.
    """
    _counts("softirqs", as_json, top, interval, count)


@cli.command(context_settings=CONTEXT)
@_json_option
@_top_option
@_interval_args
def napi(as_json: bool, top: int, interval: float | None, count: int | None) -> None:
    """NAPI polls per device: polls, packets, polls that used the whole budget.

    \b
    Interrupts vs polling: a busy device is polled (many packets per poll,
    budget often exhausted) instead of interrupting per packet. Device
    "backlog" is the per-CPU queue of drivers without NAPI (veth without GRO,
    loopback).
    """
    _counts("napi", as_json, top, interval, count)


@cli.command(context_settings=CONTEXT)
@_json_option
@_top_option
@_interval_args
def netdev(as_json: bool, top: int, interval: float | None, count: int | None) -> None:
    """Packets, bytes, transmit errors and packet sizes per device and namespace."""
    _counts("netdev", as_json, top, interval, count)


@cli.command(context_settings=CONTEXT)
@_stream_options
@click.option("--all", "show_all", is_flag=True, help="Also show benign drops.")
@click.option(
    "--benign",
    help="Comma-separated reasons to treat as benign, instead of the default list "
    "(an empty string hides nothing).",
)
@_json_option
@_top_option
@_interval_args
def drops(
    stream: bool,
    timestamp: bool,
    duration: float | None,
    buffer_pages: int | None,
    show_all: bool,
    benign: str | None,
    as_json: bool,
    top: int,
    interval: float | None,
    count: int | None,
) -> None:
    """Packet drops by reason (as this kernel names them), location, device, netns.

    \b
    Benign drops are hidden unless --all (default list: SOCKET_CLOSE,
    QUEUE_PURGE, TCP_OLD_DATA, TCP_CLOSE, OTHERHOST; see --benign).
    --stream: each drop with its 5-tuple and owner ('*' = owner unknown:
    dropped in softirq, socket not seen in process context).
    """
    from .probes.drops import DEFAULT_BENIGN

    benign_list: tuple[str, ...] = DEFAULT_BENIGN
    if benign is not None:
        benign_list = tuple(b.strip() for b in benign.split(",") if b.strip())
    if show_all:
        benign_list = ()
    if stream:
        _stream_takes_no_interval(interval)
        with _attached("drops", buffer_pages, stream=True, benign=benign_list) as probe:
            _stream(
                probe,
                as_json,
                timestamp,
                duration,
                keep=lambda ev: not probe.is_benign(ev["reason"], ev["location"]),
            )
        return
    _counts_take_no_stream_options(timestamp, duration, buffer_pages)

    def hidden(probe: Any) -> str:
        n = sum(
            r["value"]
            for r in probe.rows()
            if probe.is_benign(r.get("reason", ""), r.get("location", ""))
        )
        return f"{n} benign drops not shown (--all shows them)" if n else ""

    _counts(
        "drops",
        as_json,
        top,
        interval,
        count,
        attach={"benign": benign_list},
        keep=lambda r: not _drops_benign(r, benign_list),
        footer=hidden,
    )


def _drops_benign(row: dict[str, Any], benign: tuple[str, ...]) -> bool:
    reason = row.get("reason", "")
    return reason in benign or f"{reason}@{row.get('location', '')}" in benign


@cli.command(context_settings=CONTEXT)
@_stream_options
@_json_option
@_top_option
@_interval_args
def tcpretrans(
    stream: bool,
    timestamp: bool,
    duration: float | None,
    buffer_pages: int | None,
    as_json: bool,
    top: int,
    interval: float | None,
    count: int | None,
) -> None:
    """TCP retransmits and resets (sent, with reason; received), by netns and state.

    \b
    --stream: each retransmit/reset with its 5-tuple, state and owner.
    """
    if stream:
        _stream_takes_no_interval(interval)
        with _attached("tcpretrans", buffer_pages, stream=True) as probe:
            _stream(probe, as_json, timestamp, duration)
        return
    _counts_take_no_stream_options(timestamp, duration, buffer_pages)
    _counts("tcpretrans", as_json, top, interval, count)


@cli.command(context_settings=CONTEXT)
@click.option("--netns", help="Only this network namespace: inode or name under /run/netns.")
@_json_option
@click.option(
    "-n",
    "--top",
    default=10,
    show_default=True,
    type=click.IntRange(1, 100000),
    help="Sockets and listeners shown.",
)
@_interval_args
def queues(
    netns: str | None, as_json: bool, top: int, interval: float | None, count: int | None
) -> None:
    """Deepest socket queues (Recv-Q/Send-Q), accept backlogs, qdisc backlogs, overflows.

    \b
    Recv-Q/Send-Q as `ss` shows them, per namespace, with the owning process;
    for listeners, connections waiting to be accepted and the limit. Qdiscs
    from tc stats. Overflows (receive queue full, memory limits) are counted
    in the kernel since the start. Without INTERVAL: one report now.
    """
    from .render import queue_tables

    inode = netlink.resolve_netns(netns) if netns else None
    with _attached("queues") as probe:
        probe.netns = inode
        n = 0
        while True:
            snapshot = probe.top(top)
            overflows = probe.overflows()
            if as_json:
                print(ndjson({"time": time.time(), **snapshot, "overflows": overflows}), flush=True)
            else:
                print_tables(queue_tables(snapshot, overflows))
            n += 1
            if interval is None or (count is not None and n >= count):
                return
            time.sleep(interval)


@cli.command(context_settings=CONTEXT)
@_json_option
@_top_option
@_interval_args
def conn(as_json: bool, top: int, interval: float | None, count: int | None) -> None:
    """Connections in trouble: per connection, its retransmits, resets and drops.

    \b
    Joins the tcpretrans, drops and tcpstates streams by the connection's two
    endpoints (both directions, both namespaces of a local connection), with
    its current state and owning process. Every INTERVAL seconds (default: at
    Ctrl-C), the connections with the most failures.
    """
    from contextlib import ExitStack

    from .conn import ConnView
    from .render import conn_table

    view = ConnView()
    env = _env()
    names = ("tcpretrans", "drops", "tcpstates")
    with ExitStack() as stack:
        loader = probe_mod.COMMAND_LOADER()  # as _attached(): all three at once
        try:
            probes = {n: stack.enter_context(registry.create(n, env=env, loader=loader))
                      for n in names}  # fmt: skip
            errors = probe_mod.attach_together(probes, loader, streams=names)
        finally:
            loader.close()
        if errors:
            raise next(iter(errors.values()))
        print(
            "Joining retransmits, resets and drops per connection... "
            + ("Ctrl-C to end" if interval is None else f"every {interval:g}s"),
            file=sys.stderr,
            flush=True,
        )
        deadline_n = 0
        while True:
            end = time.monotonic() + (interval if interval is not None else 1e9)
            try:
                while time.monotonic() < end:
                    for name, probe in probes.items():
                        view.feed(name, probe.events(timeout_ms=30))
            except KeyboardInterrupt:
                if interval is not None:
                    raise
            for name, probe in probes.items():
                view.feed(name, probe.events(timeout_ms=0))
            failing = view.failing(top)
            if as_json:
                print(ndjson({"time": time.time(), "connections": [c.record() for c in failing]}))
            else:
                print_tables([conn_table(failing, "Connections with retransmits, resets or drops")])
                lost = sum(p.lost() for p in probes.values())
                if lost:
                    click.echo(f"lost events: {lost}")
            sys.stdout.flush()
            deadline_n += 1
            if interval is None or (count is not None and deadline_n >= count):
                return


@cli.command("top", context_settings=CONTEXT)
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
def top_cmd(interval: float, count: int | None, only: tuple[str, ...]) -> None:
    """Every probe at once, refreshed in place: rates per second, busiest first.

    \b
    Full-screen on a terminal (q or Ctrl-C to quit); printed frame after frame
    when the output is not a terminal.
    """
    from contextlib import ExitStack

    from rich.console import Console
    from rich.live import Live

    from .top import TopView, keypresses, quit_pressed

    env = _env()
    names = list(only) or registry.names()
    with ExitStack() as stack:
        probes = {}
        # Loaded together, like the exporter's: kept programs from the program
        # cache, the rest compiled two at a time (forkload.py).
        loader = probe_mod.COMMAND_LOADER()
        try:
            for name in names:
                probe = stack.enter_context(registry.create(name, env=env, loader=loader))
                if probe.available().hook is None:
                    if only:
                        raise PyprobeError(f"{name}: {probe.available().reason}")
                    continue  # top shows what this kernel allows; doctor says why not
                probes[name] = probe
            errors = probe_mod.attach_together(probes, loader)  # detached by the stack
        finally:
            loader.close()
        if errors:
            raise next(iter(errors.values()))
        view = TopView(probes)
        console = Console()
        n = 0
        if console.is_terminal and count is None:
            with (
                keypresses() as keys,
                Live(view.frame(), console=console, screen=True, auto_refresh=False) as live,
            ):
                while not quit_pressed(keys, interval):
                    live.update(view.frame(), refresh=True)
            return
        view.frame()  # the baseline for the first rates
        while count is None or n < count:
            time.sleep(interval)
            Console(width=max(console.width, 160)).print(view.frame())
            sys.stdout.flush()
            n += 1


def _stream_takes_no_interval(interval: float | None) -> None:
    if interval is not None:
        raise PyprobeError("INTERVAL/COUNT go with counts; use -d/--duration with --stream")


def _counts_take_no_stream_options(
    timestamp: bool, duration: float | None, buffer_pages: int | None, stream: str = "--stream"
) -> None:
    # Silently ignored, -d would leave a count running until Ctrl-C.
    given = [
        flag
        for flag, value in (("-d/--duration", duration), ("-b/--buffer-pages", buffer_pages))
        if value is not None
    ] + (["-T/--timestamp"] if timestamp else [])
    if given:
        raise PyprobeError(f"{', '.join(given)}: only with {stream} (counts take INTERVAL COUNT)")


def _stream(
    probe: Any, as_json: bool, timestamp: bool, duration: float | None, keep: Any = None
) -> None:
    from .watch import stream

    stream(probe, probe.line, probe.HEADER, as_json, timestamp, duration, keep or (lambda e: True))


@cli.command("export", context_settings=CONTEXT)
@click.option(
    "--web.listen-address",
    "address",
    default="127.0.0.1:9977",
    show_default=True,
    help="HOST:PORT to listen on (loopback by default).",
)
@click.option(
    "--web.telemetry-path",
    "telemetry_path",
    default="/metrics",
    show_default=True,
    help="Path under which to serve the metrics.",
)
@click.option(
    "--web.config.file",
    "web_config",
    type=click.Path(dir_okay=False),
    help="TLS and basic auth, in the Prometheus exporter-toolkit format; re-read on SIGHUP.",
)
@click.option("--probe", "include", multiple=True, help="Only this probe (repeat).")
@click.option("--no-probe", "exclude", multiple=True, help="Not this probe (repeat).")
@click.option("--strict", is_flag=True, help="A probe that cannot attach is fatal.")
@click.option(
    "--label-cap",
    "label_caps",
    multiple=True,
    metavar="LABEL=N",
    help="Keep at most N values of LABEL per metric; the rest fold into "
    '"other" (repeat; defaults: netns 100, device 200, reason 200, others 500).',
)
@click.option(
    "--drop-privileges",
    metavar="USER",
    help="Once attached, become USER with no capabilities left (maps are read "
    "through descriptors already open). Other namespaces are then out of reach.",
)
@click.option(
    "--bpf-stats",
    is_flag=True,
    help="Count BPF run time per program while running (BPF_ENABLE_STATS; off again on exit).",
)
@click.option(
    "--log.level",
    "log_level",
    default="info",
    type=click.Choice(["debug", "info", "warn", "error"]),
    show_default=True,
)
def export_cmd(
    address: str,
    telemetry_path: str,
    web_config: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    strict: bool,
    label_caps: tuple[str, ...],
    drop_privileges: str | None,
    bpf_stats: bool,
    log_level: str,
) -> None:
    """Serve every probe as Prometheus metrics (a long-lived daemon).

    \b
    Order of start-up: the config is validated and the port bound before any
    BPF program is loaded. Maps are read at scrape time. A probe this kernel
    cannot run is reported (pyprobe_probe_attached 0) and the rest serve,
    unless --strict. SIGHUP re-reads --web.config.file (a bad one keeps the
    old); SIGTERM/SIGINT detach everything and exit 0.
    """
    from .exporter.daemon import Options, run, setup_logging

    setup_logging("warning" if log_level == "warn" else log_level)
    from .exporter.caps import parse_caps

    opts = Options(
        address,
        web_config,
        include,
        exclude,
        strict,
        bpf_stats,
        parse_caps(label_caps),
        drop_privileges,
        telemetry_path,
    )
    run(opts, _env())


@cli.group(context_settings=CONTEXT)
def lab() -> None:
    """Network namespaces wired like the notes: veth, bridge, VXLAN; bounded traffic.

    \b
    Built with netlink (pyroute2) on 10.231.0.0/16 addresses that route
    nowhere else; `pyprobe lab down` removes every namespace it made.
    """


@lab.command("up")
@click.option(
    "-t",
    "--topology",
    default="veth",
    show_default=True,
    type=click.Choice(["veth", "bridge", "vxlan"]),
    help="veth: h1-h2; bridge: h1,h2,h3 on br0; vxlan: two bridges joined over VXLAN 42/4789.",
)
@click.option("--stp", is_flag=True, help="Spanning tree on the bridges.")
@click.option(
    "--loss",
    type=click.FloatRange(0, 100, max_open=True),
    default=0.0,
    help="Drop this % of h2's incoming packets (an eBPF tc filter).",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Delay h1's packets by this many ms (needs netem).",
)
@click.option("--rate", help="Limit h1's egress (tbf), e.g. 10mbit.")
def lab_up(topology: str, stp: bool, loss: float, delay: float, rate: str | None) -> None:
    """Bring a lab topology up."""
    from . import topology as topo

    built = topo.Lab(topology, stp=stp, loss=loss, delay_ms=delay, rate=rate).up()
    hosts = ", ".join(f"{h['netns']} {h['addr']}" for h in built.hosts.values())
    click.echo(f"lab up: {topology} — {hosts}")


@lab.command("down")
def lab_down() -> None:
    """Remove every lab namespace (and so every device in it)."""
    from . import topology as topo

    removed = topo.down()
    click.echo(f"lab down: removed {', '.join(removed) if removed else 'nothing'}")


@lab.command("status")
@_json_option
def lab_status(as_json: bool) -> None:
    """What is up: namespaces, devices, addresses, bridges."""
    from . import topology as topo

    state, found = topo.active(), topo.status()
    if as_json:
        click.echo(ndjson({"lab": state, "namespaces": found}))
        return
    if not found:
        click.echo("lab: nothing up")
        return
    if state:
        click.echo(
            f"lab: {state['topology']} (stp {'on' if state['stp'] else 'off'}, "
            f"loss {state['loss']}%, delay {state['delay_ms']} ms, rate {state['rate'] or '-'})"
        )
    for ns in found:
        for link in ns["links"]:
            if link["dev"] == "lo":
                continue
            master = f" master {link['master']}" if link["master"] else ""
            click.echo(
                f"  {ns['netns']:<12} {link['dev']:<10} {link['kind'] or '-':<7} "
                f"{link['state']:<5} {' '.join(link['addrs'])}{master}"
            )


@lab.command("traffic")
@click.argument(
    "workloads", nargs=-1, type=click.Choice(["churn", "bulk", "hoard", "refused", "firewall"])
)
@click.option("--connections", default=100, show_default=True, type=click.IntRange(1, 100000))
def lab_traffic(workloads: tuple[str, ...], connections: int) -> None:
    """Run bounded workloads from h1 to h2 (all of them by default)."""
    from .workloads import WORKLOADS, Hosts

    hosts = Hosts.from_lab()
    failed = 0
    for name in workloads or tuple(WORKLOADS):
        fn = WORKLOADS[name]
        kwargs = {"n": connections} if name in ("churn", "refused", "firewall") else {}
        try:
            click.echo(fn(hosts, **kwargs))
        except OSError as e:
            # The lab's own doing (--loss, --rate) or a lab taken down meanwhile:
            # say which workload and why, and run the others.
            failed += 1
            click.echo(f"{name}: failed: {e.strerror or e}", err=True)
    if failed:
        sys.exit(1)


@cli.command()
@click.option(
    "--connections",
    default=40,
    type=click.IntRange(1, 10000),
    show_default=True,
    help="Connections per workload.",
)
def demo(connections: int) -> None:
    """Two namespaces joined by a veth pair, bounded TCP traffic, and what tcpstates sees."""
    from .demo import run

    run(_env(), connections)


if __name__ == "__main__":
    main()
