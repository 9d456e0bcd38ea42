"""The Grafana dashboard, built as code: `python dashboards/build.py` writes
dashboards/pyprobe-overview.json (a test checks the committed file is what
this builds, and runs every panel's query against a real Prometheus).

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39): no
SDK dependency for one dashboard of timeseries panels.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("pyprobe-overview.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'
NS = 'instance=~"$instance", netns=~"$netns"'
DEV = 'instance=~"$instance", netns=~"$netns", device=~"$device"'
RATE = "$__rate_interval"

# (row title, [(panel title, unit, [(legend, expr)])])
ROWS = [
    (
        "TCP",
        [
            ("TCP sockets by state", "short",
             [("{{state}}", f"sum by (state) (pyprobe_tcp_sockets{{{NS}}})")]),
            ("TCP state changes /s", "ops",
             [("{{old_state}} → {{new_state}}",
               f"sum by (old_state, new_state) (rate(pyprobe_tcp_state_transitions_total{{{SEL}}}[{RATE}]))")]),
            ("Retransmitted segments /s", "ops",
             [("{{netns_name}} {{netns}} {{state}}",
               f"sum by (netns, netns_name, state) (rate(pyprobe_tcp_retransmit_segments_total{{{NS}}}[{RATE}]))")]),
            ("Resets /s", "ops",
             [("sent {{reason}}",
               f"sum by (reason) (rate(pyprobe_tcp_resets_sent_total{{{NS}}}[{RATE}]))"),
              ("received in {{state}}",
               f"sum by (state) (rate(pyprobe_tcp_resets_received_total{{{NS}}}[{RATE}]))")]),
        ],
    ),
    (
        "Drops",
        [
            ("Drops /s by reason", "pps",
             [("{{reason}}", f"sum by (reason) (rate(pyprobe_drops_total{{{NS}}}[{RATE}]))")]),
            ("Drops /s by kernel function (top 10)", "pps",
             [("{{location}}",
               f"topk(10, sum by (location) (rate(pyprobe_drops_total{{{NS}}}[{RATE}])))")]),
            ("Drops /s by device", "pps",
             [("{{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_drops_total{{{NS}}}[{RATE}]))")]),
        ],
    ),
    (
        "softirqs and NAPI: interrupts vs polling",
        [
            ("softirq runs /s by vector", "ops",
             [("{{vector}}", f"sum by (vector) (rate(pyprobe_softirqs_total{{{SEL}}}[{RATE}]))")]),
            ("softirq CPU by vector", "percentunit",
             [("{{vector}}",
               f"sum by (vector) (rate(pyprobe_softirq_seconds_total{{{SEL}}}[{RATE}]))")]),
            ("softirq run time p99", "s",
             [("{{vector}}",
               "histogram_quantile(0.99, sum by (le, vector) "
               f"(rate(pyprobe_softirq_run_seconds_bucket{{{SEL}}}[{RATE}])))")]),
            ("NAPI polls /s", "ops",
             [("{{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_napi_polls_total{{{DEV}}}[{RATE}]))")]),
            ("Packets per NAPI poll", "short",
             [("{{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_napi_packets_total{{{DEV}}}[{RATE}]))"
               f" / sum by (netns_name, device) (rate(pyprobe_napi_polls_total{{{DEV}}}[{RATE}]))")]),
            ("NAPI polls that used their whole budget /s", "ops",
             [("{{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_napi_budget_exhausted_total{{{DEV}}}[{RATE}]))")]),
        ],
    ),
    (
        "Devices",
        [
            ("Packets /s", "pps",
             [("rx {{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_netdev_receive_packets_total{{{DEV}}}[{RATE}]))"),
              ("tx {{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_netdev_transmit_packets_total{{{DEV}}}[{RATE}]))")]),
            ("Bytes /s", "Bps",
             [("rx {{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_netdev_receive_bytes_total{{{DEV}}}[{RATE}]))"),
              ("tx {{netns_name}} {{device}}",
               f"sum by (netns_name, device) (rate(pyprobe_netdev_transmit_bytes_total{{{DEV}}}[{RATE}]))")]),
            ("Median packet size", "bytes",
             [("{{direction}} {{device}}",
               "histogram_quantile(0.5, sum by (le, device, direction) "
               f"(rate(pyprobe_netdev_packet_size_bytes_bucket{{{DEV}}}[{RATE}])))")]),
        ],
    ),
    (
        "Queues",
        [
            ("Connections waiting in accept queues", "short",
             [("{{netns_name}} {{netns}}",
               f"sum by (netns, netns_name) (pyprobe_tcp_accept_queue_connections{{{NS}}})")]),
            ("Sockets with unread data (Recv-Q > 0)", "short",
             [("{{netns_name}} {{netns}}",
               f'sum by (netns, netns_name) (pyprobe_tcp_queue_bytes_gcount{{{NS}, queue="recv"}})'
               f' - sum by (netns, netns_name) (pyprobe_tcp_queue_bytes_bucket{{{NS}, queue="recv", le="0"}})')]),
            ("qdisc backlog", "bytes",
             [("{{netns_name}} {{device}} {{kind}}",
               f"sum by (netns_name, device, kind) (pyprobe_qdisc_backlog_bytes{{{DEV}}})")]),
            ("Socket buffer overflows /s", "ops",
             [("{{event}} {{protocol}}",
               f"sum by (event, protocol) (rate(pyprobe_socket_buffer_overflows_total{{{NS}}}[{RATE}]))")]),
        ],
    ),
    (
        "Exporter health",
        [
            ("Probes attached", "short",
             [("{{probe}} {{hook}}", f"pyprobe_probe_attached{{{SEL}}}")]),
            ("Collector time per scrape", "s",
             [("{{collector}}", f"pyprobe_scrape_collector_duration_seconds{{{SEL}}}")]),
            ("BPF maps: entries / capacity", "percentunit",
             [("{{probe}} {{map}}",
               f"pyprobe_map_entries{{{SEL}}} / pyprobe_map_max_entries{{{SEL}}}")]),
            ("Events lost /s", "ops",
             [("{{probe}}", f"sum by (probe) (rate(pyprobe_events_lost_total{{{SEL}}}[{RATE}]))")]),
        ],
    ),
]


def variable(name: str, query: str, label: str) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"},
        "definition": query,
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
        "sort": 1,
    }


def build() -> dict:
    panels, pid, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, unit, targets) in enumerate(row_panels):
            panels.append({
                "id": pid,
                "type": "timeseries",
                "title": title,
                "datasource": DS,
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "table", "placement": "bottom"},
                            "tooltip": {"mode": "multi"}},
                "targets": [
                    {"refId": chr(65 + n), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for n, (legend, expr) in enumerate(targets)
                ],
            })
            pid += 1
        y += 8 * ((len(row_panels) + 2) // 3)
    return {
        "uid": "pyprobe-overview",
        "title": "pyprobe — network overview",
        "tags": ["pyprobe", "ebpf", "network"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}},
            variable("instance", "label_values(pyprobe_build_info, instance)", "Instance"),
            variable("netns", 'label_values(pyprobe_tcp_sockets{instance=~"$instance"}, netns)',
                     "Network namespace"),
            variable("device",
                     'label_values(pyprobe_netdev_receive_packets_total{instance=~"$instance"}, device)',
                     "Device"),
        ]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}", file=sys.stderr)
