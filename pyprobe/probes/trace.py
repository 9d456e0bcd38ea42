"""trace: the hops of each packet a pcap filter matches (bpf/trace.bpf.c).

Loaded only by `pyprobe trace` (the manifest's on_demand): the filter is
compiled into the program (core/pcapfilter.py), so there is no program
without one, and nothing of it belongs in the exporter.

What a manifest cannot say: the filter, given before attach(); records of
two sizes (a hop is sent without the packet's bytes, which only the first
hop and a drop carry), so every record is read one by one and padded to the
full struct before it is decoded, never through the fixed-size batch path;
the program's own counters (stats()); and when its deferred points are
attached.

Most of its hooks only follow a packet the filter matched (a mark looked
up, nothing else): with nothing followed they still cost a program run
each, about six per packet on a loopback or veth path, which is most of
what a filter that matches nothing costs. So while nothing has matched for
`rest_after` seconds only the entries where the filter runs stay attached
(net_dev_queue, the NAPI and netif_receive_skb entries, kfree_skb: one run
per packet on those paths; netif_rx, there the peer's receive of what its
queue judged, is deferred too: a packet that enters by it alone, AF_PACKET's
qdisc bypass or pktgen, is not seen at rest), and the next match attaches
the rest (`follow()`: ~1.5 ms). That packet, and any other whose first hop
came before they were back, is followed from then on only: its hops are
marked `resumed_ms` (how long after its first hop the rest were attached).
`pyprobe trace` calls tick() to rest; `why` and the demo never do.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

from ..core.events import header
from ..core.hooks import Choice
from ..core.pcapfilter import Filter, compile_filter
from ..core.probe import Probe, plugin
from ..errors import PyprobeError
from ..kernel import programs
from ..load.program import LoadRequest, Program

# stats[] slots, as bpf/trace.bpf.c numbers them
STATS = ("filter_runs", "matches", "inherited", "hops", "stale")


F_FIRST = header().constant("F_FIRST")  # trace_event.flags: a packet's first hop


@plugin("trace")
class Trace(Probe):
    filter: Filter | None = None
    # seconds without a match before only the entries stay attached; None: never
    rest_after: float | None = None
    _last_match = 0.0  # monotonic seconds of the newest first hop
    _paused_ns = 0  # monotonic ns: when the deferred points were last detached
    _resumed_ns = 0  # ... and attached again

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._links: list[int] = []  # the deferred points' attachments, while following

    def configure(self, expression: str | Filter | None = None, **_: Any) -> None:
        """The pcap-filter expression, or it compiled (a one-line
        PyprobeError when libpcap refuses it or the translation cannot keep
        it exact)."""
        if expression is not None:
            self.filter = (
                expression if isinstance(expression, Filter) else compile_filter(expression)
            )

    def load_request(self, stream: bool = False, cflags: Sequence[str] = ()) -> LoadRequest:
        if self.filter is None:
            raise PyprobeError("trace: no filter (the program is built around one)")
        return super().load_request(stream=stream, cflags=(*self.filter.cflags(), *cflags))

    def cflags(self, choice: Choice, stream: bool = False) -> list[str]:
        flags = super().cflags(choice, stream)
        if self.env.raw_tracepoint_args("consume_skb") >= 2:  # 6.3+: where it was freed
            flags.append("-DCONSUME_LOCATION")
        return flags

    def adopt(self, program: Program | None, stream: bool = False) -> None:
        # Not Probe.adopt's ring: its batch path reads one record size only.
        super().adopt(program, stream=False)
        self.streaming = stream
        self._links = []
        if program is None:
            return
        if stream and self.manifest.event is not None:
            program.open_ringbuf(self.manifest.event.ringbuf, self._on_event)
        self.follow()

    @property
    def following(self) -> bool:
        """Whether the deferred points are attached (or there are none)."""
        return bool(self._links) or not self._deferred()

    def _deferred(self) -> list[tuple[int, str | None]]:
        """Each deferred point's program fd, and the name a raw tracepoint
        attaches by (a tp_btf program knows its own)."""
        hook, fds = self.hook, self.program_fds()
        if hook is None:
            return []
        return [
            (fds[p.function], p.target if (p.kind or hook.kind) == "raw_tracepoint" else None)
            for p in hook.points
            if p.deferred and p.function in fds
        ]

    def follow(self) -> None:
        """Attach the deferred points (again)."""
        if self._links or self.program is None:
            return
        try:
            for fd, target in self._deferred():
                self._links.append(programs.attach(fd, target))
        except BaseException:
            self.rest()
            raise
        if self._paused_ns:  # after a rest (not the first attach)
            self._resumed_ns = time.monotonic_ns()
        self._last_match = time.monotonic()

    def rest(self) -> None:
        """Detach the deferred points and forget that anything was marked:
        the entries then run the filter and nothing else. (A match in the
        moment between is seen at its first hop, which attaches them again;
        that packet alone may lose its hops until the next match re-arms.)"""
        if self._unlink() and self.program is not None:
            self._paused_ns = time.monotonic_ns()
            self.program.delete_keys("armed", [0])  # an array's: zeroed

    def _unlink(self) -> int:
        """Close the deferred points' links; how many there were."""
        links, self._links = self._links, []
        for fd in links:
            os.close(fd)
        return len(links)

    def tick(self, now: float | None = None) -> None:
        """Rest once nothing has matched for rest_after seconds."""
        now = time.monotonic() if now is None else now
        idle = now - self._last_match
        if self.rest_after is not None and self._links and idle >= self.rest_after:
            self.rest()

    def detach(self) -> None:
        self._unlink()  # before the programs go
        super().detach()

    def decode(self, raw: bytes) -> dict[str, Any]:
        size = self.event_row.size
        whole = bytes(raw[:size]).ljust(size, b"\0")  # a hop without data[]
        return self.decode_row((len(raw), *self.event_row.unpack_from(whole)))

    def _on_event(self, raw: bytes) -> None:
        hop = self.decode(raw)
        if hop["flags"] & F_FIRST:
            self._last_match = time.monotonic()
            if not self._links:
                self.follow()
            if self._paused_ns < hop["ts_ns"] < self._resumed_ns:
                hop["resumed_ms"] = (self._resumed_ns - hop["ts_ns"]) / 1e6
        self._pending.append(hop)

    def stats(self) -> dict[str, int]:
        """What the program did: filter runs, matches, hops sent, marks found stale."""
        if self.program is None:
            return {}
        counts = self.program.read_counts("stats")
        return {name: int(counts.get(i, 0)) for i, name in enumerate(STATS)}
