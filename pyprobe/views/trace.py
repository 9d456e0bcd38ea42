"""`pyprobe trace`'s view: hops grouped into packets, and their text.

The program sends hops (bpf/trace.bpf.c); every hop of one packet carries
the packet's id. A packet is shown once it has ended — freed (consume_skb),
dropped (kfree_skb), or quiet for `idle` seconds (TCP frees what it read
without a tracepoint; a packet may leave the host) — or when the trace
ends. Its hops are shown in time order: the ring buffer orders records by
when they were reserved, and CPUs reserve at slightly different moments.

A device's kind (veth, bridge, vxlan, tun...) comes from its namespace's
link table (netlink's IFLA_INFO_KIND), read when a hop names a device not
seen yet; the tests give their own lookup.
"""

from __future__ import annotations

import ipaddress
import struct
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TextIO

from ..core.eventcode import MONO_TO_WALL_NS
from ..core.events import header
from ..core.text import json_line, netns_cell
from ..netns import devices, namespaces
from . import pcapng

# what each hook (PYPROBE_HOP_*, lower-cased by the event decoder) means, as shown
WHAT = {
    "queue": "queued",
    "start_xmit": "to the driver",
    "xmit": "transmitted",
    "netif_rx": "received (backlog)",
    "gro": "received (NAPI)",
    "receive_entry": "received",
    "receive_list": "received (list)",
    "receive": "into the stack",
    "enqueue": "qdisc enqueue",
    "dequeue": "qdisc dequeue",
    "drop": "DROPPED",
    "consume": "freed",
    "copy": "read by",
    "icmp_send": "ICMP error sent about it",
}
ENDS = ("drop", "consume")  # hooks after which the skb is gone

# trace_event.flags, as bpf/pyprobe.h defines them
F_FIRST, F_ETHERNET, F_ENCAP, F_DECAP, F_CLONE, F_NAT = (
    header().constant(f"F_{name}")
    for name in ("FIRST", "ETHERNET", "ENCAP", "DECAP", "CLONE", "NAT")
)

KindOf = Callable[[int, int], str]  # (netns inode, ifindex) -> kind ("" when none)


@dataclass
class Packet:
    pkt: int
    hops: list[dict[str, Any]] = field(default_factory=list)
    last_seen: float = 0.0  # monotonic seconds of the newest hop's arrival here
    clones: set[str] = field(default_factory=set)  # skb addresses of its clones

    @property
    def first(self) -> dict[str, Any]:
        return min(self.hops, key=lambda h: h["ts_ns"])

    @property
    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.hops, key=lambda h: h["ts_ns"])

    @property
    def ended(self) -> bool:
        """Freed or dropped (a clone of it may live on: a raw socket's copy
        is read after the original was dropped for want of a ping socket)."""
        return any(h["hook"] in ENDS for h in self.hops)

    @property
    def resumed_ms(self) -> float | None:
        """When its first hop came while the follow-only hooks were
        detached (probes/trace.py): how long after it they were back; its
        hops before then are not shown."""
        return next((h["resumed_ms"] for h in self.hops if "resumed_ms" in h), None)

    @property
    def dropped(self) -> dict[str, Any] | None:
        """Its last hop, when that is a drop: how it ended."""
        last = self.ordered[-1]
        return last if last["hook"] == "drop" else None

    @property
    def end(self) -> str:
        last = self.ordered[-1]["hook"]
        return {"drop": "dropped", "consume": "freed", "copy": "read"}.get(last, "unfinished")

    def first_bytes(self) -> tuple[dict[str, Any], bytes, bool] | None:
        """Its first hop (the one that carries them), its bytes, and whether
        they start at a MAC header; None when they were not seen."""
        first = next((h for h in self.hops if h["flags"] & F_FIRST), None)
        if first is None:
            return None
        return first, bytes(first["data"])[: first["caplen"]], bool(first["flags"] & F_ETHERNET)

    def summary(self) -> str:
        seen = self.first_bytes()
        if seen is None:
            return "(its first bytes were not seen)"
        first, raw, ethernet = seen
        return describe(raw, ethernet, first["wirelen"])

    def headers(self) -> Headers:
        seen = self.first_bytes()
        return Headers() if seen is None else headers(seen[1], seen[2])

    def quoted(self) -> Headers:
        """The headers an ICMP error quotes (the packet it is about); none
        when this is not one or its bytes were not seen."""
        seen = self.first_bytes()
        return Headers() if seen is None else quoted(seen[1], seen[2])

    def comment(self) -> str:
        """How it ended and the devices it went through, in a line (the
        pcapng packet comment)."""
        hops = self.ordered
        end = hops[-1]
        places: list[str] = []
        for h in hops:
            place = f"{netns_cell(h)}/{h.get('device') or '-'}"
            if not places or places[-1] != place:
                places.append(place)
        ended = what(end) if end["hook"] in ENDS else f"last seen: {what(end)}"
        return f"pyprobe trace: {ended}; path: {' > '.join(places)}"

    def capture(self) -> tuple[int, bytes, int, bool] | None:
        """(wall-clock ns, bytes, length on the wire, from Ethernet?) of its
        first hop, for a pcap file; None when its bytes were not seen."""
        seen = self.first_bytes()
        if seen is None:
            return None
        first, data, ethernet = seen
        return first["ts_ns"] + MONO_TO_WALL_NS, data, first["wirelen"], ethernet

    def record(self) -> dict[str, Any]:
        """The packet as JSON shows it: its summary, end, and every hop."""
        hops = self.ordered
        t0 = hops[0]["ts_ns"]
        drop = self.dropped
        return {
            "packet": self.pkt,
            "time": hops[0]["time"],
            "summary": self.summary(),
            "end": self.end,
            "drop_reason": drop["drop_reason"] if drop else None,
            "drop_location": drop["location"] if drop else None,
            "resumed_ms": self.resumed_ms,
            "hops": [
                {
                    "ms": (h["ts_ns"] - t0) / 1e6,
                    "netns": h["netns"],
                    "netns_name": h["netns_name"] or None,
                    "device": h["device"] or None,
                    "kind": h.get("kind") or None,
                    "hook": h["hook"],
                    "what": what(h),
                    "skb": h["skaddr"],
                    "len": h["len"],
                }
                for h in hops
            ],
        }


def what(h: Mapping[str, Any]) -> str:
    """What happened at a hop, in words."""
    hook = h["hook"]
    text = WHAT.get(hook, hook)
    if hook == "drop":
        text = f"DROPPED: {h['drop_reason']} at {h['location']}"
    elif hook == "consume":  # (before 6.3 consume_skb tells no location)
        text = "freed" if h["location"] in ("", "0x0") else f"freed at {h['location']}"
    elif hook == "copy":
        text = f"read by {h['comm']} ({h['pid']})"
    elif hook == "xmit" and h["reason"]:
        text = f"transmit failed (rc {h['reason']})"
    elif hook in ("enqueue", "dequeue") and h["reason"]:
        handle = h["reason"]
        text = f"{text} {handle >> 16:x}:{handle & 0xFFFF:x}"
    elif hook == "icmp_send":
        text = f"ICMP error sent about it (type {h['reason'] >> 8} code {h['reason'] & 0xFF})"
    if h["flags"] & F_ENCAP:
        text += " (encapsulated)"
    if h["flags"] & F_DECAP:
        text += " (decapsulated)"
    if h["flags"] & F_CLONE:
        text += " (a clone)"
    if h["flags"] & F_NAT:
        text += " (NAT: addresses or ports rewritten)"
    return text


def device_cell(h: Mapping[str, Any]) -> str:
    dev = h.get("device") or "-"
    kind = h.get("kind")
    return f"{dev} ({kind})" if kind and dev != "-" else dev


def lines(p: Packet, number: int) -> list[str]:
    """A packet's text: a summary line, then a line per hop."""
    hops = p.ordered
    t0 = hops[0]["ts_ns"]
    out = [f"#{number} {p.summary()}"]
    if p.resumed_ms is not None:
        out[0] += f"  (followed only from +{p.resumed_ms:.3f} ms: the trace was resting)"

    for h in hops:
        ms = (h["ts_ns"] - t0) / 1e6
        out.append(
            f"  {ms:>+10.3f} ms  {netns_cell(h)[:14]:<14} {device_cell(h)[:22]:<22} {what(h)}"
        )
    return out


class Tracker:
    """Hops in, packets out: each once it has ended, or gone quiet. A hop
    of a packet already shown (read by a process later than `idle`) is
    counted in `late`, not shown as a packet of its own."""

    SHOWN = 65536  # ids of shown packets remembered

    def __init__(
        self, kind_of: KindOf | None = None, idle: float = 1.0, grace: float = 0.05
    ) -> None:
        self.kind_of = kind_of or (lambda netns, ifindex: "")
        self.idle = idle
        # an ended packet waits this long for its clones' hops (other CPUs)
        self.grace = min(grace, idle)
        self.open: dict[int, Packet] = {}
        self.shown: dict[int, None] = {}  # insertion-ordered: the oldest go first
        self.late = 0

    def feed(self, hops: Iterable[dict[str, Any]], now: float | None = None) -> list[Packet]:
        """Take hops; return the packets that ended with them, in the order
        each was first seen."""
        now = time.monotonic() if now is None else now
        for h in hops:
            if h["pkt"] in self.shown:
                self.late += 1
                continue
            h["kind"] = self.kind_of(h["netns"], h["ifindex"]) if h["ifindex"] else ""
            p = self.open.get(h["pkt"])
            if p is None:
                p = self.open[h["pkt"]] = Packet(h["pkt"])
            # the program flags a clone where it finds one; its later hops are the clone's too
            if h["flags"] & F_CLONE:
                p.clones.add(h["skaddr"])
            elif h["skaddr"] in p.clones:
                h["flags"] |= F_CLONE
            p.hops.append(h)
            p.last_seen = now
        return self._take(lambda p: now - p.last_seen >= (self.grace if p.ended else self.idle))

    def flush(self) -> list[Packet]:
        """Every packet still open (the trace ends)."""
        return self._take(lambda p: True)

    def _take(self, done: Callable[[Packet], bool]) -> list[Packet]:
        out = [p for p in self.open.values() if done(p)]
        for p in out:
            del self.open[p.pkt]
            self.shown[p.pkt] = None
        while len(self.shown) > self.SHOWN:
            del self.shown[next(iter(self.shown))]
        return sorted(out, key=lambda p: p.first["ts_ns"])


# -- a packet's first bytes, in words ---------------------------------------------------
_ICMP = {0: "echo reply", 3: "unreachable", 8: "echo request", 11: "time exceeded"}
_ICMP6 = {1: "unreachable", 3: "time exceeded", 128: "echo request", 129: "echo reply"}
_TCP_FLAGS = "FSRPAUEC"


@dataclass(frozen=True)
class Headers:
    """What a packet's first bytes say: its addresses, protocol and ports,
    TCP flags, ICMP type and code; size: its IP length (0: not IP)."""

    ethertype: int = 0
    src: str = ""
    dst: str = ""
    l4: int = 0
    sport: int = 0
    dport: int = 0
    tcp_flags: str = ""
    icmp_type: int = -1
    icmp_code: int = -1
    icmp_id: int = -1
    icmp_seq: int = -1
    size: int = 0


def _network(raw: bytes, ethernet: bool) -> tuple[int, bytes]:
    """The ethertype and what follows the link-layer header (VLAN tags
    skipped); (0, b"") when the bytes end before it."""
    at, proto = 0, 0x0800
    if ethernet:
        if len(raw) < 14:
            return 0, b""
        (proto,) = struct.unpack_from("!H", raw, 12)
        at = 14
        while proto in (0x8100, 0x88A8) and len(raw) >= at + 4:  # VLAN tags
            (proto,) = struct.unpack_from("!H", raw, at + 2)
            at += 4
    return proto, raw[at:]


def quoted(raw: bytes, ethernet: bool) -> Headers:
    """The headers an ICMP or ICMPv6 error quotes after its 8 bytes: the
    packet it is about."""
    _, ip = _network(raw, ethernet)
    if not ip:
        return Headers()
    length = (ip[0] & 0xF) * 4 if ip[0] >> 4 == 4 else 40  # IPv4's header length, or IPv6's
    return headers(ip[length + 8 :], ethernet=False)


def headers(raw: bytes, ethernet: bool) -> Headers:
    """A packet's headers from its first bytes (from its MAC header when
    ethernet, else its IP)."""
    proto, ip = _network(raw, ethernet)
    if ethernet and proto not in (0x0800, 0x86DD):
        return Headers(ethertype=proto)
    version = ip[0] >> 4 if ip else 0
    if version == 4 and len(ip) >= 20:
        src, dst = str(ipaddress.IPv4Address(ip[12:16])), str(ipaddress.IPv4Address(ip[16:20]))
        l4, body = ip[9], ip[(ip[0] & 0xF) * 4 :]
        size = struct.unpack_from("!H", ip, 2)[0]
    elif version == 6 and len(ip) >= 40:
        src, dst = str(ipaddress.IPv6Address(ip[8:24])), str(ipaddress.IPv6Address(ip[24:40]))
        l4, body = ip[6], ip[40:]
        size = struct.unpack_from("!H", ip, 4)[0] + 40
    else:
        return Headers(ethertype=proto)
    h = Headers(0x86DD if version == 6 else 0x0800, src, dst, l4, size=size)
    if l4 in (6, 17) and len(body) >= 4:
        sport, dport = struct.unpack_from("!HH", body)
        flags = ""
        if l4 == 6 and len(body) >= 14:
            flags = "".join(c for i, c in enumerate(_TCP_FLAGS) if body[13] & (1 << i))
        return replace(h, sport=sport, dport=dport, tcp_flags=flags)
    if l4 in (1, 58) and len(body) >= 2:
        h = replace(h, icmp_type=body[0], icmp_code=body[1])
        if len(body) >= 8:
            ident, seq = struct.unpack_from("!HH", body, 4)
            h = replace(h, icmp_id=ident, icmp_seq=seq)
    return h


def describe(raw: bytes, ethernet: bool, wirelen: int) -> str:
    """`10.0.0.1 > 10.0.0.2 ICMP echo request id 7 seq 1, 84 bytes` from a
    packet's first bytes (from its MAC header when ethernet, else its IP)."""
    h = headers(raw, ethernet)
    if not h.size:
        return (
            f"ethertype {h.ethertype:#06x}, {wirelen} bytes" if h.ethertype else f"{wirelen} bytes"
        )
    if h.l4 in (6, 17) and (h.sport or h.dport):
        text = f"{h.src}:{h.sport} > {h.dst}:{h.dport} {'TCP' if h.l4 == 6 else 'UDP'}"
        if h.l4 == 6 and h.tcp_flags:
            text += f" [{h.tcp_flags}]"
    elif h.l4 in (1, 58) and h.icmp_type >= 0:
        echo = h.icmp_type in (0, 8, 128, 129)
        name = (_ICMP if h.l4 == 1 else _ICMP6).get(h.icmp_type, f"type {h.icmp_type}")
        text = f"{h.src} > {h.dst} ICMP{'v6' if h.l4 == 58 else ''} {name}"
        if echo and h.icmp_seq >= 0:
            text += f" id {h.icmp_id} seq {h.icmp_seq}"
        elif not echo:
            text += f" code {h.icmp_code}"
    else:
        text = f"{h.src} > {h.dst} protocol {h.l4}"
    return f"{text}, {h.size} bytes"


class DeviceKinds:
    """(netns inode, ifindex) -> kind, from each namespace's link table, read
    again when a device is not in it (at most every `refresh` seconds)."""

    def __init__(self, refresh: float = 0.5) -> None:
        self.refresh = refresh
        self.tables: dict[int, dict[int, str]] = {}
        self.read_at: dict[int, float] = {}

    def __call__(self, netns: int, ifindex: int) -> str:
        table = self.tables.get(netns, {})
        now = time.monotonic()
        if ifindex not in table and now - self.read_at.get(netns, -1e9) >= self.refresh:
            self.read_at[netns] = now
            try:
                table = self.tables[netns] = _kinds_in(netns)
            except (OSError, KeyError):
                return ""  # gone, or not ours to enter: the hop shows no kind
        return table.get(ifindex, "")


def _kinds_in(netns: int) -> dict[int, str]:
    if netns == namespaces.self_netns():
        return devices.link_kinds()
    paths = namespaces.netns_paths().get(netns)
    if not paths:
        raise KeyError(netns)
    return devices.link_kinds(paths[0])


def run(
    probe: Any,
    tracker: Tracker,
    out: TextIO,
    as_json: bool = False,
    count: int | None = None,
    duration: float | None = None,
    end: threading.Event | None = None,
    pcap: pcapng.Writer | None = None,
) -> int:
    """Print each packet as it ends, until `count` packets were shown, the
    duration is over or `end` is set; then the ones still open. The number
    of packets shown. With pcap, each is also written there."""
    deadline = time.monotonic() + duration if duration else None
    shown = 0

    def show(packets: list[Packet]) -> bool:
        nonlocal shown
        for p in packets:
            if count is not None and shown >= count:
                return True
            shown += 1
            captured = p.capture() if pcap is not None else None
            if pcap is not None and captured is not None:
                pcap.packet(*captured, comment=p.comment())
            if as_json:
                out.write(json_line(p.record()) + "\n")
            else:
                out.write("\n".join(lines(p, shown)) + "\n")
        out.flush()
        if pcap is not None:
            pcap.flush()
        return count is not None and shown >= count

    while not (end is not None and end.is_set()):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        wait = 100 if left is None else max(0, min(100, int(left * 1000)))
        if show(tracker.feed(probe.events(timeout_ms=wait))):
            return shown
        probe.tick()  # rest its follow-only hooks while nothing matches
    show(tracker.feed(probe.events(timeout_ms=0)) + tracker.flush())
    return shown
