"""tcpstates: decoding, filters and the summary (transitions + live sockets)."""

from __future__ import annotations

import ctypes
import socket
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from .. import ndjson, netlink, tcpsummary
from ..decoders import TCP_STATES, tcp_state
from ..errors import PyprobeError
from ..loader import LoadRequest
from ..probe import PREFIX, Probe
from ..registry import register
from ..render import quoted
from ..structs import F_BYTES_KNOWN, F_DELTA_KNOWN, F_LIFE_KNOWN, F_OWNER_KNOWN, TcpStateEvent

# struct tcpstate_event (bpf/pyprobe.h), for struct.unpack_from.
_EVENT = struct.Struct("=QQQQQQII16s16sHHHBBI16s4x")
assert _EVENT.size == ctypes.sizeof(TcpStateEvent)

# Raw address (16 bytes) -> text, per family; comm bytes -> text. Bounded:
# cleared when full, so a scan of many addresses cannot grow them for ever.
_ADDR4: dict[bytes, str] = {}
_ADDR6: dict[bytes, str] = {}
_COMMS: dict[bytes, str] = {}
_CACHE_MAX = 65536


def _name(names: dict[bytes, str], family: int, raw: bytes) -> str:
    if len(names) >= _CACHE_MAX:
        names.clear()
    if family == socket.AF_INET6:
        text = socket.inet_ntop(socket.AF_INET6, raw)
    else:
        text = socket.inet_ntop(socket.AF_INET, raw[:4])
    names[raw] = text
    return text


def _comm(raw: bytes) -> str:
    if len(_COMMS) >= _CACHE_MAX:
        _COMMS.clear()
    text = _COMMS[raw] = raw.rstrip(b"\0").decode(errors="replace")
    return text


# CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock, fixed once per process.
_MONO_TO_WALL_NS = time.time_ns() - time.monotonic_ns()
_MONO_TO_WALL = _MONO_TO_WALL_NS / 1e9

# The stream's NDJSON line, straight from an unpacked row (json_lines): one
# %-format per event. Only comm and the namespace name can hold characters
# JSON must escape; they come quoted by render.quoted, cached.
_STATE_TEXT = tuple(tcp_state(i) for i in range(256))  # oldstate/newstate: u8 in the event
_JSON_LINE = (
    '{"time":%d.%09d,"ts_ns":%d,"skaddr":"%#x","pid":%d,"comm":%s,"owner_known":%s,'
    '"netns":%d,"family":"%s","saddr":"%s","sport":%d,"daddr":"%s","dport":%d,'
    '"oldstate":"%s","newstate":"%s","ms":%s,"life_ms":%s,"rx_bytes":%s,"tx_bytes":%s,'
    '"netns_name":%s}\n'
)


CLOSE_ONLY = "-DFILTER_CLOSE"


@dataclass(frozen=True)
class Filters:
    """The stream's filters, compiled into the program as constants."""

    pid: int | None = None
    lports: tuple[int, ...] = ()
    dports: tuple[int, ...] = ()
    family: int | None = None
    netns: int | None = None
    close_only: bool = False  # tcplife: only the changes to CLOSE, with the totals

    def cflags(self) -> list[str]:
        flags = [CLOSE_ONLY] if self.close_only else []
        if self.pid is not None:
            flags.append(f"-DFILTER_PID={self.pid}")
        if self.family is not None:
            flags.append(f"-DFILTER_FAMILY={self.family}")
        if self.netns is not None:
            flags.append(f"-DFILTER_NETNS={self.netns}u")
        for macro, ports in (("LPORT_MATCH", self.lports), ("DPORT_MATCH", self.dports)):
            if ports:
                flags.append(f"-D{macro}(p)=(" + "||".join(f"(p)=={p}" for p in ports) + ")")
        return flags


def parse_ports(text: str | None) -> tuple[int, ...]:
    """ "80,443" -> (80, 443); anything else is a one-line error."""
    if not text:
        return ()
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise PyprobeError(
                f"bad port {part!r} in {text!r}: expected numbers 1-65535, comma-separated"
            )
        ports.append(int(part))
    return tuple(dict.fromkeys(ports))


@register("tcpstates")
class TcpStates(Probe):
    filters = Filters()
    STREAM_VARIANTS = {"tcplife": (CLOSE_ONLY,)}  # `pyprobe tcplife`: Filters(close_only=True)

    def attach(
        self, stream: bool = False, cflags: Sequence[str] = (), filters: Filters | None = None
    ) -> None:
        if filters is not None:
            self.filters = filters
        super().attach(stream=stream, cflags=cflags)

    def load_request(self, stream: bool = False, cflags: Sequence[str] = ()) -> LoadRequest:
        if self.filters.netns is not None:
            choice = self.available()
            if "OFF_NET_INUM" in choice.offsets.absent or choice.offsets.source == "none":
                raise PyprobeError(
                    "--netns needs the socket's namespace: no BTF or matching headers"
                )
        return super().load_request(stream=stream, cflags=[*self.filters.cflags(), *cflags])

    EVENT_ROW = _EVENT

    def decode(self, raw: bytes) -> dict[str, Any]:
        return self.decode_row((len(raw), *_EVENT.unpack_from(raw)))

    def decode_row(self, row: tuple) -> dict[str, Any]:
        # The hot path of the stream (100k+ events/s): rows come unpacked in
        # batches (ringbuf.py); addresses and names repeat, so their strings
        # are cached rather than formatted per event.
        (
            _,
            ts,
            skaddr,
            delta,
            life,
            rx,
            tx,
            pid,
            netns,
            saddr,
            daddr,
            sport,
            dport,
            family,
            old,
            new,
            flags,
            comm,
        ) = row
        names = _ADDR6 if family == socket.AF_INET6 else _ADDR4
        src = names.get(saddr) or _name(names, family, saddr)
        dst = names.get(daddr) or _name(names, family, daddr)
        return {
            "time": (ts + _MONO_TO_WALL_NS) / 1_000_000_000,
            "ts_ns": ts,
            "skaddr": f"{skaddr:#x}",
            "pid": pid,
            "comm": _COMMS.get(comm) or _comm(comm),
            "owner_known": bool(flags & F_OWNER_KNOWN),
            "netns": netns,
            "family": "IPv6" if family == socket.AF_INET6 else "IPv4",
            "saddr": src,
            "sport": sport,
            "daddr": dst,
            "dport": dport,
            "oldstate": _STATE_TEXT[old],
            "newstate": _STATE_TEXT[new],
            "ms": delta / 1_000_000 if flags & F_DELTA_KNOWN else None,
            "life_ms": life / 1_000_000 if flags & F_LIFE_KNOWN else None,
            "rx_bytes": rx if flags & F_BYTES_KNOWN else None,
            "tx_bytes": tx if flags & F_BYTES_KNOWN else None,
        }

    @staticmethod
    def json_lines(rows: Iterable[tuple], netns_json: Callable[[int], str]) -> str:
        """NDJSON for a batch of unpacked rows: the values ndjson(decode_row(row))
        gives, without the dict in between (~1.5x less CPU), the bytes the C
        formatter writes (native/tcpstates_ndjson.c, used where it builds).
        time and ms are written as exact decimals of their nanoseconds (the
        float json.loads reads from them is decode_row's). netns_json(inode)
        gives the quoted namespace name, or null."""
        out: list[str] = []
        add, fmt, states, wall = out.append, _JSON_LINE, _STATE_TEXT, _MONO_TO_WALL_NS
        addr4, comms = _ADDR4.get, _COMMS.get
        spaces: dict[int, str] = {}  # per batch: a namespace may be named meanwhile
        for row in rows:
            (_, ts, skaddr, delta, life, rx, tx, pid, netns, saddr, daddr) = row[:11]
            (sport, dport, family, old, new, flags, comm) = row[11:]
            if family == socket.AF_INET6:
                kind = "IPv6"
                src = _ADDR6.get(saddr) or _name(_ADDR6, family, saddr)
                dst = _ADDR6.get(daddr) or _name(_ADDR6, family, daddr)
            else:
                kind = "IPv4"
                src = addr4(saddr) or _name(_ADDR4, family, saddr)
                dst = addr4(daddr) or _name(_ADDR4, family, daddr)
            space = spaces.get(netns)
            if space is None:
                space = spaces[netns] = netns_json(netns)
            seconds, nanos = divmod(ts + wall, 1_000_000_000)
            add(
                fmt
                % (
                    seconds,
                    nanos,
                    ts,
                    skaddr,
                    pid,
                    quoted(comms(comm) or _comm(comm)),
                    "true" if flags & F_OWNER_KNOWN else "false",
                    netns,
                    kind,
                    src,
                    sport,
                    dst,
                    dport,
                    states[old],
                    states[new],
                    f"{delta // 1_000_000}.{delta % 1_000_000:06d}"
                    if flags & F_DELTA_KNOWN
                    else "null",
                    f"{life // 1_000_000}.{life % 1_000_000:06d}"
                    if flags & F_LIFE_KNOWN
                    else "null",
                    rx if flags & F_BYTES_KNOWN else "null",
                    tx if flags & F_BYTES_KNOWN else "null",
                    space,
                )
            )
        return "".join(out)

    _native: ndjson.TcpStatesNdjson | None = None

    def native_ndjson(self, netns_json: Callable[[int], str]) -> Callable[[int], bytes] | None:
        """The stream's NDJSON made in C (ndjson.py): a function that waits
        up to timeout_ms and returns the lines of what arrived, the bytes
        json_lines would give. None where it cannot be had (no compiler,
        not x86, the ring read by bcc's callbacks)."""
        reader = getattr(self._attached(), "ring_reader", lambda: None)()
        lib = ndjson.library() if reader is not None else None
        if lib is None or reader is None:
            return None

        def slow(raw: bytes) -> str:  # what C handed back (a record of another size: none)
            rows = [(len(raw), *_EVENT.unpack_from(raw))] if len(raw) == _EVENT.size else []
            return self.json_lines(rows, netns_json)

        native = self._native = ndjson.TcpStatesNdjson(
            lib, reader, _STATE_TEXT, _MONO_TO_WALL_NS, netns_json, slow
        )

        def read(timeout_ms: int) -> bytes:
            self._attached().poll(timeout_ms)
            return native.take()

        return read

    def detach(self) -> None:
        if self._native is not None:
            self._native.close()
            self._native = None
        super().detach()

    def transitions(self) -> dict[tuple[str, str], int]:
        spec = next(m for m in self.manifest.metrics if m.map == "transitions")
        return {(old, new): int(v) for (old, new), v in self.samples(spec)}

    @staticmethod
    def live_sockets(netns: int | None = None) -> dict[int, dict[str, int]]:
        """inode -> {state: count}, like `netstat -n | awk` per namespace."""
        return tcpsummary.state_counts_by_netns(netns)

    def collect(self) -> Iterable[Metric]:
        yield from super().collect()
        names = netlink.named_netns()
        sockets = GaugeMetricFamily(
            PREFIX + "tcp_sockets",
            "Live TCP sockets by state and network namespace (sock_diag).",
            labels=["netns", "netns_name", "state"],
        )
        for inode, counts in self.live_sockets().items():
            for state in TCP_STATES.values():
                if state in counts:
                    sockets.add_metric([str(inode), names.get(inode, ""), state], counts[state])
        yield sockets
