"""trace: the hops of each packet a pcap filter matches (bpf/trace.bpf.c).

Loaded only by `pyprobe trace` (the manifest's on_demand): the filter is
compiled into the program (core/pcapfilter.py), so there is no program
without one, and nothing of it belongs in the exporter.

What a manifest cannot say: the filter, given before attach(); records of
two sizes (a hop is sent without the packet's bytes, which only the first
hop and a drop carry), so every record is read one by one and padded to the
full struct before it is decoded, never through the fixed-size batch path;
and the program's own counters (stats()).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.pcapfilter import Filter, compile_filter
from ..core.probe import Probe, plugin
from ..errors import PyprobeError
from ..load.program import LoadRequest, Program

# stats[] slots, as bpf/trace.bpf.c numbers them
STATS = ("filter_runs", "matches", "inherited", "hops", "stale")


@plugin("trace")
class Trace(Probe):
    filter: Filter | None = None

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

    def adopt(self, program: Program | None, stream: bool = False) -> None:
        # Not Probe.adopt's ring: its batch path reads one record size only.
        super().adopt(program, stream=False)
        self.streaming = stream
        if stream and program is not None and self.manifest.event is not None:
            program.open_ringbuf(self.manifest.event.ringbuf, self._on_event)

    def decode(self, raw: bytes) -> dict[str, Any]:
        size = self.event_row.size
        whole = bytes(raw[:size]).ljust(size, b"\0")  # a hop without data[]
        return self.decode_row((len(raw), *self.event_row.unpack_from(whole)))

    def _on_event(self, raw: bytes) -> None:
        self._pending.append(self.decode(raw))

    def stats(self) -> dict[str, int]:
        """What the program did: filter runs, matches, hops sent, marks found stale."""
        if self.program is None:
            return {}
        counts = self.program.read_counts("stats")
        return {name: int(counts.get(i, 0)) for i, name in enumerate(STATS)}
