"""`pyprobe why HOST:PORT`: a bounded probe of a TCP destination, traced,
and a verdict on why it fails (views/why.py)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import socket
import struct
import sys
import termios
import time
from pathlib import Path

import click

from ..core.pcapfilter import compile_filter
from ..core.text import json_line
from ..errors import PyprobeError
from ..netns import namespaces, snapshot
from ..views import evidence
from ..views import trace as view
from ..views import why as verdict
from ..views.watch import ctrl_c_ends
from .common import CONTEXT, LOADING, SECONDS, Documented, attached_many, json_option, netns_option

_UNREACHABLE = (errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL)
# The probes attached beside the trace (with their features), and the streams
# read: the evidence views/evidence.py names causes from.
BESIDE: dict[str, tuple[str, ...]] = {
    "drops": (),
    "neigh": (),
    "routes": ("lookups",),
    "icmp": (),
    "tcpretrans": (),
    "queues": (),
    "conntrack": (),
}
STREAMS = ("trace", "drops", "neigh", "icmp", "tcpretrans")


def target_of(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT -> (numeric address, port); one line when not."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise PyprobeError(f"{text!r}: expected HOST:PORT (or [IPv6]:PORT)")
    try:
        found = socket.getaddrinfo(host, int(port), proto=socket.IPPROTO_TCP)
    except socket.gaierror as e:
        raise PyprobeError(f"{host}: {e.strerror}") from None
    return str(found[0][4][0]), int(port)


def acknowledged(s: socket.socket, size: int, deadline: float) -> bool:
    """Write size bytes and wait until the peer has acknowledged them all
    (nothing left in the send queue, SIOCOUTQ) or the deadline passes; then
    reset the connection, so that nothing is left retransmitting after us."""
    s.setblocking(False)
    with contextlib.suppress(BlockingIOError):  # what the send buffer takes: enough
        s.send(b"w" * size)
    try:
        while time.monotonic() < deadline:
            left = struct.unpack("i", fcntl.ioctl(s, termios.TIOCOUTQ, b"\0" * 4))[0]
            if left == 0:
                return True
            time.sleep(0.01)
        return False
    finally:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def attempt(addr: str, port: int, timeout: float, size: int = 0) -> verdict.Attempt:
    """One connect; with size, then size bytes written: "stalled" when they
    are not all acknowledged within the timeout."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    start = time.monotonic()
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            outcome = "connected"
            if size and not acknowledged(s, size, start + timeout):
                outcome = "stalled"
        except ConnectionRefusedError:
            outcome = "refused"
        except TimeoutError:
            outcome = "timeout"
        except OSError as e:
            outcome = "unreachable" if e.errno in _UNREACHABLE else (e.strerror or str(e))
    return verdict.Attempt(outcome, (time.monotonic() - start) * 1000)


def datagram(addr: str, port: int, timeout: float) -> verdict.Attempt:
    """A datagram and the wait for an answer: a connected UDP socket hears
    of an ICMP port unreachable as ECONNREFUSED."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    start = time.monotonic()
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        try:
            s.connect((addr, port))
            s.send(b"pyprobe why\n")
            s.recv(2048)
            outcome = "answered"
        except ConnectionRefusedError:
            outcome = "refused"
        except TimeoutError:
            outcome = "timeout"
        except OSError as e:
            outcome = "unreachable" if e.errno in _UNREACHABLE else (e.strerror or str(e))
    return verdict.Attempt(outcome, (time.monotonic() - start) * 1000)


def netns_path(spec: str | None) -> Path | None:
    if spec is None:
        return None
    inode = namespaces.resolve_netns(spec)
    paths = namespaces.netns_paths().get(inode)
    if not paths:
        raise PyprobeError(f"--netns {spec}: no path to enter it by")
    return Path(paths[0])


@click.command(cls=Documented, context_settings=CONTEXT, environment=LOADING)
@click.argument("target")
@netns_option
@click.option(
    "-n", "--attempts", type=click.IntRange(1, 100), default=3, show_default=True,
    help="Connection attempts.",
)  # fmt: skip
@click.option(
    "--timeout", type=SECONDS, default=2.0, show_default=True, help="Seconds an attempt may take."
)
@click.option("-u", "--udp", is_flag=True, help="A UDP destination: datagrams, not connects.")
@click.option(
    "-s", "--size", type=click.IntRange(0, 1 << 20), default=0, show_default=True,
    help="After each connect, write this many bytes and wait for them to be acknowledged "
    "(big segments: a path MTU black hole stalls them). TCP only.",
)  # fmt: skip
@click.option(
    "--watch", type=SECONDS, metavar="SECONDS",
    help="Make no attempt: watch the real traffic to TARGET for this long (Ctrl-C ends it "
    "sooner), its connections' outcomes read from their packets.",
)  # fmt: skip
@json_option
def why(
    target: str,
    netns: str | None,
    attempts: int,
    timeout: float,
    udp: bool,
    size: int,
    watch: float | None,
    as_json: bool,
) -> None:
    """Why a TCP (or UDP) destination cannot be reached: probe it, trace it, say why.

    \b
    Connects to TARGET (HOST:PORT) a few times (-u: sends it datagrams and
    waits for an answer), from --netns or this namespace, while `pyprobe
    trace` follows the packets and the ICMP errors about them, and drops,
    neigh, routes (lookups), icmp, tcpretrans, queues and conntrack watch
    beside it; then ranks the causes the evidence shows, in the namespaces
    the packets crossed: dropped (by netfilter, tc, the neighbour layer,
    routing: where and with the kernel's reason), no ARP reply (the
    address), no route (the prefix and table), refused (no listener: the
    SYNs no socket took and the resets, or an ICMP port unreachable, and
    from which namespace), a full accept queue (listen overflows), STP
    blocking a port, conntrack drops, ICMP unreachable (and who said so),
    an MTU black hole (with --size: data written after the connect is not
    acknowledged, the ICMP that would say why is dropped), no answer (where
    the request was last seen), or reachable.

    \b
    Examples:
      pyprobe why 10.231.1.2:8080
      pyprobe why --netns h1 -n 5 10.231.4.2:80
      pyprobe why -u 10.231.1.2:53
      pyprobe why --netns h1 -s 65536 10.231.4.2:8085   # an MTU black hole
      pyprobe why --watch 30 10.231.1.2:8080   # the clients' own connections, for 30 s
    """
    if size and udp:
        raise PyprobeError("--size: TCP only (a datagram's size is not a stream's)")
    if watch is not None and (size or netns):
        raise PyprobeError("--watch makes no attempt: it takes no --size or --netns")
    addr, port = target_of(target)
    path = netns_path(netns)
    hostport = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
    ip = "ip6" if ":" in addr else "ip"
    l4 = "udp" if udp else "tcp"
    expression = f"({l4} and host {addr} and port {port}) or (icmp and {ip} host {addr})"
    if ip == "ip6":
        expression = f"{l4} and host {addr} and port {port}"
    compiled = compile_filter(expression)
    tracker = view.Tracker(view.DeviceKinds(), idle=0.5)

    def probe_all() -> list[verdict.Attempt]:
        if udp:
            return [datagram(addr, port, timeout) for _ in range(attempts)]
        return [attempt(addr, port, timeout, size) for _ in range(attempts)]

    chosen = {name: frozenset(features) for name, features in BESIDE.items()}
    with attached_many(
        {"trace": None, **chosen},
        streams=STREAMS,
        skip_unavailable=True,
        options={"trace": {"expression": compiled}},
        optional=tuple(BESIDE),
    ) as probes:
        if "trace" not in probes:
            raise PyprobeError("why: the trace probe cannot run here (see `pyprobe doctor`)")
        beside = ", ".join(n for n in probes if n != "trace")
        if not as_json:
            doing = (
                f"Watching the traffic to {hostport} for {watch:g} s"
                if watch is not None
                else f"Probing {hostport} ({attempts} attempts)"
            )
            click.echo(f"{doing}, tracing its packets ({beside} beside)...", err=True)
        snapshot.expire()  # the kernel's counters read now, before and after
        before = {n: p.rows() for n, p in probes.items() if n != "trace"}
        packets: list[view.Packet] = []
        streamed: dict[str, list[dict]] = {n: [] for n in STREAMS if n in probes and n != "trace"}
        if watch is not None:
            with ctrl_c_ends() as end:
                stop = time.monotonic() + watch
                while time.monotonic() < stop and not end.is_set():
                    # read as they come: a long watch would fill the rings
                    packets += tracker.feed(probes["trace"].events(timeout_ms=100))
                    for n, got in streamed.items():
                        got += probes[n].events(timeout_ms=0)
        else:
            made = probe_all() if path is None else namespaces.run_in_netns(path, probe_all)
        time.sleep(0.2)  # the last packets' hops reach the ring
        snapshot.expire()  # not the pass `before` took (a scrape shares one for 0.5 s)
        packets += tracker.feed(probes["trace"].events(timeout_ms=100)) + tracker.flush()
        for n, got in streamed.items():
            got += probes[n].events(timeout_ms=100)
        seen = evidence.Evidence(
            rows={n: evidence.changed(rows, probes[n].rows()) for n, rows in before.items()},
            events=streamed,
        )
    if watch is not None:
        made = verdict.observed(packets, addr, port, udp)
    source = namespaces.netns_label(namespaces.resolve_netns(netns)) if netns else None
    if as_json:
        found = verdict.causes(hostport, made, packets, udp, seen, source)
        record = {
            "target": hostport,
            "causes": [c.text for c in found],
            "attempts": [{"outcome": a.outcome, "ms": a.ms} for a in made],
            "watched_s": watch,
            "beside": sorted(seen.rows),
            "packets": [p.record() for p in packets],
        }
        print(json_line(record))
    else:
        print("\n".join(verdict.report(hostport, made, packets, udp, seen, source, watch)))
    sys.stdout.flush()


COMMANDS = (why,)
