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
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from ..core.probe import Option, Probe, plugin
from ..core.text import hostport, netns_cell
from ..errors import PyprobeError
from ..load.program import LoadRequest, Program

DEFAULT_BENIGN = (
    "SOCKET_CLOSE",
    "QUEUE_PURGE",
    "TCP_OLD_DATA",
    "TCP_CLOSE",
    "OTHERHOST",
    "NOT_SPECIFIED@udp_destruct_common",
)


@plugin("drops")
class Drops(Probe):
    benign: tuple[str, ...] = DEFAULT_BENIGN
    OPTIONS = (
        Option("--all", "show_all", "Also show benign drops.", flag=True),
        Option(
            "--benign",
            "benign",
            "Comma-separated reasons (REASON or REASON@function) to treat as benign, "
            "instead of the default list (an empty string hides nothing).",
        ),
    )

    def configure(self, show_all: bool = False, benign: str | None = None, **_: Any) -> None:
        if benign is not None:
            self.benign = tuple(b.strip() for b in benign.split(",") if b.strip())
        if show_all:
            self.benign = ()

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
        if numbers:  # filtered in the kernel, before the ring buffer
            flags.append("-DBENIGN(r)=(" + "||".join(f"(r)=={n}" for n in numbers) + ")")
        return super().load_request(stream=stream, cflags=flags)

    def adopt(self, program: Program | None, stream: bool = False) -> None:
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

    HEADER = (
        f"{'PID':>7} {'COMM':<12} {'NETNS':<12} {'DEV':<10} {'PROTO':<5} "
        f"{'SOURCE':<22} {'DESTINATION':<22} {'REASON':<22} LOCATION"
    )

    def line(self, ev: Mapping[str, Any]) -> str:
        comm = ev["comm"] + ("" if ev["owner_known"] else "*")
        src = hostport(ev["saddr"], ev["sport"]) if ev["saddr"] else "-"
        dst = hostport(ev["daddr"], ev["dport"]) if ev["daddr"] else "-"
        netns = netns_cell(ev)
        return (
            f"{ev['pid']:>7} {comm[:12]:<12} {netns[:12]:<12} {(ev['device'] or '-')[:10]:<10} "
            f"{(ev['l4'] or ev['protocol'])[:5]:<5} {src:<22} {dst:<22} {ev['reason'][:22]:<22} "
            f"{ev['location']}"
        )

    def is_benign(self, reason: str, location: str = "") -> bool:
        """The one benign rule: a reason, or a reason where it was freed
        (location: a function, with or without its +offset)."""
        function = location.partition("+")[0]
        return reason in self.benign or f"{reason}@{function}" in self.benign

    def hides(self, row: Mapping[str, Any]) -> bool:
        return self.is_benign(row.get("reason", ""), row.get("location", ""))

    def note(self, rows: Iterable[Mapping[str, Any]]) -> str:
        n = sum(r.get("value", 0) for r in rows if self.hides(r))
        return f"{n} benign drops not shown (--all shows them)" if n else ""

    def stream_keep(self) -> Callable[[Mapping[str, Any]], bool] | None:
        # REASON entries are filtered in the kernel; REASON@function ones here
        if not any("@" in b for b in self.benign):
            return None
        return lambda ev: not self.is_benign(ev["reason"], ev["location"])
