"""queues: socket queues (sock_diag), accept backlogs, qdisc backlogs (tc
stats), all read when asked, plus the BPF overflow counters.

Recv-Q/Send-Q mean what `ss` says: for established sockets, bytes not yet
read by the application / not yet acknowledged by the peer; for listeners,
connections waiting in the accept queue / the queue's limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)

from ..core.probe import Probe, Table, plugin
from ..core.series import PREFIX
from ..core.text import netns_cell
from ..kernel.names import TCP_STATE_NUMBERS, endpoint, tcp_state
from ..netns import snapshot, sockdiag
from ..netns.namespaces import each_netns, named_netns
from ..netns.sockdiag import RECV_Q, SEND_Q, STATE, Sock
from ..netns.sockets import socket_owners

LISTEN = TCP_STATE_NUMBERS["LISTEN"]
ACK_RTT = "tcp_ack_rtt_seconds"  # the acks feature's histogram (probes/queues.toml)
ACK_RTT_TITLE = "Smoothed RTT at each segment received, since the start (tcp:tcp_probe)"


@plugin("queues")
class Queues(Probe):
    netns: int | None = None  # only this namespace, when set

    def stats(self, qdiscs: bool = False) -> dict[int, snapshot.Summary]:
        """inode of the namespace -> its TCP sockets summed (netns/snapshot.py),
        and with qdiscs its qdiscs; one pass serves every collector of a scrape.
        With the rtt feature on, the pass reads tcp_info too."""
        snap = snapshot.snapshot(qdiscs=qdiscs, rtts="rtt" in self.features)
        return {k: v for k, v in snap.items() if self.netns is None or k == self.netns}

    def records(self) -> dict[int, list[tuple]]:
        """Full sock_diag records (addresses too), read now: for top-N rows."""
        return each_netns(sockdiag.tcp_records, self.netns)

    def qdiscs(self) -> dict[int, list[dict[str, Any]]]:
        """inode -> the namespace's qdiscs, read in the sockets' pass. Device
        names from the link table every probe shares (read at most once a
        second), not a link dump per namespace per scrape."""
        found = {}
        for inode, summary in self.stats(qdiscs=True).items():
            if isinstance(summary.qdiscs, Exception):
                raise summary.qdiscs
            found[inode] = [
                {**q, "device": self.decoders.ifname_in(inode, q["ifindex"])}
                for q in summary.qdiscs
            ]
        return found

    def top(self, n: int = 10, owners: bool = True) -> dict[str, list[dict[str, Any]]]:
        """The deepest socket queues, the listeners, and the qdiscs with a backlog.
        Only the top n are decoded into rows (addresses, names, owners)."""
        names = named_netns()
        queued: list[tuple[int, Sock]] = []
        listening: list[tuple[int, Sock]] = []
        for inode, records in self.records().items():
            for rec in records:
                if rec[STATE] == LISTEN:
                    listening.append((inode, Sock.from_record(rec)))
                elif rec[RECV_Q] or rec[SEND_Q]:
                    queued.append((inode, Sock.from_record(rec)))
        queued.sort(key=lambda x: -(x[1].recv_q + x[1].send_q))
        listening.sort(key=lambda x: -x[1].recv_q)
        found = [_row(inode, s, names) for inode, s in queued[:n]]
        listeners = []
        for inode, s in listening[:n]:
            r = _row(inode, s, names)
            r["backlog"], r["backlog_max"] = r.pop("recv_q"), r.pop("send_q")
            listeners.append(r)
        if owners:
            who = socket_owners()
            for r in (*found, *listeners):
                r["pid"], r["comm"] = who.get(r["inode"], (0, ""))
        qdiscs = [
            {"netns": inode, "netns_name": names.get(inode, ""), **q}
            for inode, qs in self.qdiscs().items()
            for q in qs
        ]
        qdiscs.sort(key=lambda q: (-q["backlog"], -q["drops"]))
        return {"sockets": found, "listeners": listeners, "qdiscs": qdiscs}

    def rtt_rows(self) -> list[dict[str, Any]]:
        """Per namespace with established sockets: their count and smoothed
        RTT (ms) and congestion window (segments) at p50, p99 and max."""
        names = named_netns()
        out = []
        for inode, summary in self.stats().items():
            if isinstance(summary.rtts, Exception):
                raise summary.rtts
            if not summary.rtts:
                continue
            ms = sorted(srtt / 1000 for srtt, _, _ in summary.rtts)
            cwnd = sorted(w for _, _, w in summary.rtts)
            out.append(
                {
                    "netns": inode,
                    "netns_name": names.get(inode, ""),
                    "sockets": len(ms),
                    "rtt_ms_p50": _rank(ms, 0.5),
                    "rtt_ms_p99": _rank(ms, 0.99),
                    "rtt_ms_max": ms[-1],
                    "cwnd_p50": _rank(cwnd, 0.5),
                    "cwnd_min": cwnd[0],
                }
            )
        return out

    def ack_rtt_rows(self) -> list[dict[str, Any]]:
        """The acks feature's histogram rows (count, sum, p50/p99 bounds in
        seconds) of the namespace asked for, or of all."""
        return [
            r
            for r in self.rows()
            if r["metric"] == ACK_RTT and (self.netns is None or r["netns"] == str(self.netns))
        ]

    def tables(self, n: int) -> list[Table]:
        """The deepest socket queues and accept queues, and the qdiscs with a
        backlog or drops, for `top`."""
        top = self.top(n, owners=False)
        socks = [
            (netns_cell(s), s["local"], s["peer"], str(s["recv_q"]), str(s["send_q"]))
            for s in top["sockets"]
        ] + [
            (netns_cell(s), s["local"], "(accept queue)", str(s["backlog"]), str(s["backlog_max"]))
            for s in top["listeners"]
            if s["backlog"]
        ]
        qdiscs = [
            (
                netns_cell(q),
                q["device"],
                q["kind"],
                str(q["backlog"]),
                str(q["qlen"]),
                str(q["drops"]),
            )
            for q in top["qdiscs"]
            if q["backlog"] or q["drops"]
        ]
        return [
            Table(
                "Deepest socket queues",
                ("NETNS", "LOCAL", "PEER", "RECV-Q", "SEND-Q"),
                socks,
                ("RECV-Q", "SEND-Q"),
            ),
            Table("qdisc backlog", ("NETNS", "DEV", "KIND", "BYTES", "PKTS", "DROPS"), qdiscs[:n]),
        ]

    def overflows(self) -> list[dict[str, Any]]:
        """Buffer overflows per namespace, event, protocol and local port (the
        metric leaves the port out: one series per port would be unbounded)."""
        spec = self.manifest.metrics[0]
        names = named_netns()
        out = []
        for fields, value in self._series().raw_series(spec):
            out.append(
                {
                    "netns": self.decoders.netns_inode(fields["netns"]),
                    "netns_name": names.get(self.decoders.netns_inode(fields["netns"]), ""),
                    "event": self.decoders.get("queue_event")(fields["event"], fields),
                    "protocol": self.decoders.get("ip_protocol")(fields["protocol"], fields),
                    "port": fields["port"],
                    "value": value,
                }
            )
        return sorted(out, key=lambda r: -r["value"])

    def collect(self) -> Iterable[Metric]:
        yield from super().collect()
        names = named_netns()
        labels = ["netns", "netns_name"]
        # A snapshot, not a count since start: a gauge histogram (its
        # buckets and _gsum/_gcount go down as queues drain).
        depth = GaugeHistogramMetricFamily(
            PREFIX + "tcp_queue_bytes",
            "Distribution of TCP socket queues (not listeners) now: Recv-Q unread bytes, "
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
        for inode, summary in self.stats().items():
            ns = [str(inode), names.get(inode, "")]
            for queue in ("recv", "send"):
                depth.add_metric([*ns, queue], summary.buckets(queue), summary.total(queue))
            backlog.add_metric(ns, summary.backlog)
            backlog_max.add_metric(ns, summary.fullest)
        yield depth
        yield backlog
        yield backlog_max
        if "rtt" in self.features:
            yield from rtt_metrics(self.stats(), names)
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


def _rank(ordered: list, q: float) -> Any:
    """The value at quantile q of an ordered list (nearest rank)."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(inode: int, s: Sock, names: dict[int, str]) -> dict[str, Any]:
    return {
        "netns": inode,
        "netns_name": names.get(inode, ""),
        "state": tcp_state(s.state),
        "local": endpoint(s.family, s.src, s.sport),
        "peer": endpoint(s.family, s.dst, s.dport),
        "recv_q": s.recv_q,
        "send_q": s.send_q,
        "inode": s.inode,
    }


# Gauge histogram bounds: smoothed RTT in seconds (50 µs, a namespace's
# loopback, to 1 s, a satellite link), congestion window in segments.
RTT_BOUNDS = (5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CWND_BOUNDS = (1, 2, 4, 10, 20, 50, 100, 200, 500, 1000)


def gauge_buckets(values: list[float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Cumulative (le, count) buckets of values now."""
    out = [(repr(float(b)) if isinstance(b, float) else str(b), sum(v <= b for v in values))
           for b in bounds]  # fmt: skip
    return [*out, ("+Inf", len(values))]


def rtt_metrics(stats: dict[int, snapshot.Summary], names: dict[int, str]) -> Iterable[Metric]:
    """The rtt feature: every established socket's smoothed RTT and
    congestion window now (tcp_info through sock_diag, what `ss -ti` shows),
    per namespace, as gauge histograms: no hook on any ACK."""
    labels = ["netns", "netns_name"]
    rtt = GaugeHistogramMetricFamily(
        PREFIX + "tcp_rtt_seconds",
        "Smoothed RTT of established TCP sockets now (tcp_info srtt, as ss -ti), per namespace.",
        labels=labels,
    )
    cwnd = GaugeHistogramMetricFamily(
        PREFIX + "tcp_cwnd_segments",
        "Congestion window of established TCP sockets now (tcp_info snd_cwnd), per namespace.",
        labels=labels,
    )
    for inode, summary in stats.items():
        if isinstance(summary.rtts, Exception):
            raise summary.rtts
        if not summary.rtts:
            continue  # no established socket: no 34 series of zeros
        ns = [str(inode), names.get(inode, "")]
        seconds = [srtt / 1e6 for srtt, _, _ in summary.rtts]
        windows = [float(w) for _, _, w in summary.rtts]
        rtt.add_metric(ns, gauge_buckets(seconds, RTT_BOUNDS), sum(seconds))
        cwnd.add_metric(ns, gauge_buckets(windows, CWND_BOUNDS), sum(windows))
    yield rtt
    yield cwnd
