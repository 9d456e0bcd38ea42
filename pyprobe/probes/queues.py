"""queues: socket queues (sock_diag), accept backlogs, qdisc backlogs (tc
stats), all read when asked, plus the BPF overflow counters.

Recv-Q/Send-Q mean what `ss` says: for established sockets, bytes not yet
read by the application / not yet acknowledged by the peer; for listeners,
connections waiting in the accept queue / the queue's limit.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .. import netlink
from ..decoders import endpoint
from ..probe import PREFIX, Probe
from ..registry import register

# Buckets of the queue-depth distribution (bytes), 0 first: most queues are empty.
QUEUE_BUCKETS = (0, 1024, 16384, 65536, 262144, 1048576, 4194304, 16777216)


@register("queues")
class Queues(Probe):
    netns: int | None = None  # only this namespace, when set

    def sockets(self) -> dict[int, list[dict[str, Any]]]:
        """inode of the namespace -> its TCP sockets with queues (sock_diag)."""
        return netlink.each_netns(netlink.tcp_sockets, self.netns)

    def qdiscs(self) -> dict[int, list[dict[str, Any]]]:
        return netlink.each_netns(netlink.qdiscs, self.netns)

    def top(self, n: int = 10, owners: bool = True) -> dict[str, list[dict[str, Any]]]:
        """The deepest socket queues, the listeners, and the qdiscs with a backlog."""
        names = netlink.named_netns()
        found: list[dict[str, Any]] = []
        listeners: list[dict[str, Any]] = []
        for inode, socks in self.sockets().items():
            for s in socks:
                row = {
                    "netns": inode,
                    "netns_name": names.get(inode, ""),
                    "state": s["state"],
                    "local": endpoint(s["family"], _packed(s["src"]), s["sport"]),
                    "peer": endpoint(s["family"], _packed(s["dst"]), s["dport"]),
                    "recv_q": s["recv_q"],
                    "send_q": s["send_q"],
                    "inode": s["inode"],
                }
                if s["state"] == "LISTEN":
                    row["backlog"], row["backlog_max"] = row.pop("recv_q"), row.pop("send_q")
                    listeners.append(row)
                elif s["recv_q"] or s["send_q"]:
                    found.append(row)
        found.sort(key=lambda r: -(r["recv_q"] + r["send_q"]))
        found = found[:n]
        listeners.sort(key=lambda r: -r["backlog"])
        listeners = listeners[:n]
        if owners:
            who = netlink.socket_owners()
            for row in (*found, *listeners):
                pid, comm = who.get(row["inode"], (0, ""))
                row["pid"], row["comm"] = pid, comm
        qdiscs = [
            {"netns": inode, "netns_name": names.get(inode, ""), **q}
            for inode, qs in self.qdiscs().items()
            for q in qs
        ]
        qdiscs.sort(key=lambda q: (-q["backlog"], -q["drops"]))
        return {"sockets": found, "listeners": listeners, "qdiscs": qdiscs}

    def overflows(self) -> list[dict[str, Any]]:
        """Buffer overflows per namespace, event, protocol and local port (the
        metric leaves the port out: one series per port would be unbounded)."""
        spec = self.manifest.metrics[0]
        names = netlink.named_netns()
        out = []
        for fields, value in self.raw_series(spec):
            out.append(
                {
                    "netns": fields["netns"],
                    "netns_name": names.get(fields["netns"], ""),
                    "event": self.decoders.get("queue_event")(fields["event"], fields),
                    "protocol": self.decoders.get("ip_protocol")(fields["protocol"], fields),
                    "port": fields["port"],
                    "value": value,
                }
            )
        return sorted(out, key=lambda r: -r["value"])

    def collect(self) -> Iterable[Metric]:
        yield from super().collect()
        names = netlink.named_netns()
        labels = ["netns", "netns_name"]
        depth = HistogramMetricFamily(
            PREFIX + "tcp_queue_bytes",
            "Distribution of TCP socket queues (not listeners): Recv-Q unread bytes, "
            "Send-Q unacknowledged bytes (sock_diag).",
            labels=[*labels, "queue"],
        )
        backlog = GaugeMetricFamily(
            PREFIX + "tcp_accept_queue_connections",
            "Connections waiting in listeners' accept queues, summed per namespace.",
            labels=labels,
        )
        backlog_max = GaugeMetricFamily(
            PREFIX + "tcp_accept_queue_fill_ratio",
            "The fullest listener's accept queue as a fraction of its limit, per namespace.",
            labels=labels,
        )
        for inode, socks in self.sockets().items():
            ns = [str(inode), names.get(inode, "")]
            queues: dict[str, list[int]] = {"recv": [], "send": []}
            waiting, fullest = 0, 0.0
            for s in socks:
                if s["state"] == "LISTEN":
                    waiting += s["recv_q"]
                    if s["send_q"]:
                        fullest = max(fullest, s["recv_q"] / s["send_q"])
                else:
                    queues["recv"].append(s["recv_q"])
                    queues["send"].append(s["send_q"])
            for queue, values in queues.items():
                buckets = [(str(b), sum(1 for v in values if v <= b)) for b in QUEUE_BUCKETS] + [
                    ("+Inf", len(values))
                ]
                depth.add_metric([*ns, queue], buckets, sum(values))
            backlog.add_metric(ns, waiting)
            backlog_max.add_metric(ns, fullest)
        yield depth
        yield backlog
        yield backlog_max
        yield from self._qdisc_metrics(names)

    def _qdisc_metrics(self, names: dict[int, str]) -> Iterable[Metric]:
        labels = ["netns", "netns_name", "device", "kind", "handle"]
        gauges = {
            "backlog": GaugeMetricFamily(
                PREFIX + "qdisc_backlog_bytes", "Bytes queued in the qdisc (tc).", labels=labels
            ),
            "qlen": GaugeMetricFamily(
                PREFIX + "qdisc_backlog_packets", "Packets queued in the qdisc (tc).", labels=labels
            ),
        }
        counters = {
            name: CounterMetricFamily(PREFIX + f"qdisc_{name}", help_, labels=labels)
            for name, help_ in (
                ("drops", "Packets the qdisc dropped (tc)."),
                ("requeues", "Packets requeued because the device was busy (tc)."),
                ("overlimits", "Times the qdisc was over its limit, e.g. throttled (tc)."),
            )
        }
        for inode, qs in self.qdiscs().items():
            for q in qs:
                values = [str(inode), names.get(inode, ""), q["device"], q["kind"], q["handle"]]
                for key, gauge in gauges.items():
                    gauge.add_metric(values, q[key])
                for key, counter in counters.items():
                    counter.add_metric(values, q[key])
        yield from gauges.values()
        yield from counters.values()


def _packed(addr: str) -> bytes:
    return ipaddress.ip_address(addr).packed if addr else b""
