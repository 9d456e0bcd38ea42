"""drops: reason names from the running kernel, the benign filter, decoding.

The benign filter hides drops that are part of normal operation, so the
person debugging sees the real ones first. It applies to the stream (in the
kernel, before the ring buffer) and to the tables; the counters and the
exporter still count every drop, with its reason as a label.

Default benign reasons, and why they are normal:
  SOCKET_CLOSE   the application closed a socket with data it never read
  QUEUE_PURGE    a socket or device queue flushed on teardown
  TCP_OLD_DATA   a duplicate TCP segment: its data had arrived already
  TCP_CLOSE      a segment for a socket that is closing
  OTHERHOST      a frame for another host's MAC (bridges, promiscuous mode)
  NOT_SPECIFIED@udp_destruct_common
                 datagrams nobody read when their UDP socket was closed
An entry is REASON (filtered in the kernel, before the ring buffer) or
REASON@function (filtered in user space, by where the packet was freed).
Override with --all, or --benign ENTRY,... (an empty list hides nothing).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from ..decoders import FAMILIES, inet_addr, ip_protocol, netns_name
from ..errors import PyprobeError
from ..loader import LoadRequest, Program
from ..probe import Probe
from ..registry import register
from ..render import hostport
from ..structs import F_HAS_TUPLE, F_OWNER_KNOWN, DropEvent
from .tcpstates import _MONO_TO_WALL

DEFAULT_BENIGN = (
    "SOCKET_CLOSE",
    "QUEUE_PURGE",
    "TCP_OLD_DATA",
    "TCP_CLOSE",
    "OTHERHOST",
    "NOT_SPECIFIED@udp_destruct_common",
)


@register("drops")
class Drops(Probe):
    benign: tuple[str, ...] = DEFAULT_BENIGN

    def reason_numbers(self, names: Sequence[str]) -> list[int]:
        """Kernel numbers of reason names; an unknown name is a one-line error."""
        by_name = {n: v for v, n in self.decoders.drop_reasons.items()}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(by_name), n=3)
            hint = f"did you mean {', '.join(close)}? " if close else ""
            raise PyprobeError(
                f"unknown drop reason {', '.join(unknown)}: {hint}this kernel has "
                f"{len(by_name)} (see `pyprobe drops --all`, or the reason list in "
                "/sys/kernel/tracing/events/skb/kfree_skb/format)"
            )
        return [by_name[n] for n in names]

    def attach(
        self, stream: bool = False, cflags: Sequence[str] = (), benign: Sequence[str] | None = None
    ) -> None:
        if benign is not None:
            self.benign = tuple(benign)
        super().attach(stream=stream, cflags=cflags)

    def load_request(self, stream: bool = False, cflags: Sequence[str] = ()) -> LoadRequest:
        present = set(self.decoders.drop_reasons.values())
        # A name this kernel lacks is a typo, unless it is one of our defaults
        # (reasons come and go between kernel versions).
        self.reason_numbers([b.partition("@")[0] for b in self.benign if b not in DEFAULT_BENIGN])
        numbers = self.reason_numbers([n for n in self.benign if n in present])
        flags = list(cflags)
        consumed = self._consumed_value()
        if consumed is not None:
            flags.append(f"-DSKB_CONSUMED_REASON={consumed}")
        if numbers:
            flags.append("-DBENIGN(r)=(" + "||".join(f"(r)=={n}" for n in numbers) + ")")
        return super().load_request(stream=stream, cflags=flags)

    def adopt(self, program: Program, stream: bool = False) -> None:
        super().adopt(program, stream)
        self.decoders.symbols  # noqa: B018 - load kallsyms now, not in the first scrape

    def _consumed_value(self) -> int | None:
        """SKB_CONSUMED's number in this kernel (BTF), for the kprobe path."""
        btf = self.env.btf()
        if btf is None:
            return None
        try:
            values = {name: v for v, name in btf.enum("skb_drop_reason").items()}
        except Exception:
            return None
        return values.get("SKB_CONSUMED")

    def decode(self, raw: bytes) -> dict[str, Any]:
        ev = DropEvent.from_buffer_copy(raw)
        tuple_known = bool(ev.flags & F_HAS_TUPLE)
        family = ev.family if tuple_known else 0
        return {
            "time": ev.ts_ns / 1e9 + _MONO_TO_WALL,
            "reason": self.decoders.drop_reasons.get(ev.reason, f"REASON_{ev.reason}"),
            "location": self.decoders.symbols.name(ev.location),
            "pid": ev.pid,
            "comm": ev.comm.decode(errors="replace"),
            "owner_known": bool(ev.flags & F_OWNER_KNOWN),
            "netns": self.decoders.netns_inode(ev.netns),
            "netns_name": netns_name(self.decoders.netns_inode(ev.netns)),
            "device": self.decoders.ifname(ev.ifindex, ev.netns) if ev.ifindex else "",
            "protocol": self.decoders.get("eth_protocol")(ev.protocol, {}),
            "family": FAMILIES.get(family, ""),
            "l4": ip_protocol(ev.l4proto) if tuple_known else "",
            "saddr": inet_addr(family, bytes(ev.saddr)) if tuple_known else "",
            "sport": ev.sport,
            "daddr": inet_addr(family, bytes(ev.daddr)) if tuple_known else "",
            "dport": ev.dport,
            "skaddr": f"{ev.skaddr:#x}" if ev.skaddr else "",
        }

    HEADER = (
        f"{'PID':>7} {'COMM':<12} {'NETNS':<12} {'DEV':<10} {'PROTO':<5} "
        f"{'SOURCE':<22} {'DESTINATION':<22} {'REASON':<22} LOCATION"
    )

    def line(self, ev: dict[str, Any]) -> str:
        comm = ev["comm"] + ("" if ev["owner_known"] else "*")
        src = hostport(ev["saddr"], ev["sport"]) if ev["saddr"] else "-"
        dst = hostport(ev["daddr"], ev["dport"]) if ev["daddr"] else "-"
        netns = ev["netns_name"] or str(ev["netns"] or "-")
        return (
            f"{ev['pid']:>7} {comm[:12]:<12} {netns[:12]:<12} {(ev['device'] or '-')[:10]:<10} "
            f"{(ev['l4'] or ev['protocol'])[:5]:<5} {src:<22} {dst:<22} {ev['reason'][:22]:<22} "
            f"{ev['location']}"
        )

    def is_benign(self, reason: str, location: str = "") -> bool:
        function = location.partition("+")[0]
        return reason in self.benign or f"{reason}@{function}" in self.benign

    def by_reason(self) -> dict[str, int]:
        spec = self.manifest.metrics[0]
        out: dict[str, int] = {}
        for labels, value in self.samples(spec):
            out[labels[0]] = out.get(labels[0], 0) + int(value)
        return out
