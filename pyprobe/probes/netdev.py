"""netdev: the packet-size histogram takes its sum from the byte counters.

The histogram lives in the device's own map value (sizes[direction][slot]),
so a packet is one map lookup on the hottest path of all, and it keeps no
sum: the sum of the sizes of the packets a device sent or received is
exactly its byte counter, which the same program keeps for the same packets.
"""

from __future__ import annotations

from ..manifest import Metric as MetricSpec
from ..probe import Probe
from ..registry import register

BYTES = {
    "transmit": "netdev_transmit_bytes_total",
    "receive": "netdev_receive_bytes_total",
}


@register("netdev")
class NetDev(Probe):
    def histograms(self, spec: MetricSpec) -> list[tuple[tuple[str, ...], list[int], float]]:
        out = super().histograms(spec)
        if spec.name != "netdev_packet_size_bytes":
            return out
        metrics = {m.name: m for m in self.manifest.metrics}
        totals = {direction: dict(self.samples(metrics[name])) for direction, name in BYTES.items()}
        # labels: netns, netns_name, device, direction; the byte counters lack direction
        return [
            (labels, buckets, float(totals[labels[-1]].get(labels[:-1], 0)))
            for labels, buckets, _ in out
        ]
