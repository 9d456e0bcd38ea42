"""The Grafana dashboard, built as code from the probes' manifests: a row per
probe (its `[dashboard]` panels, or one generated from each of its metrics),
then the exporter's own health. `python dashboards/build.py` writes
dashboards/pyprobe-overview.json; a test checks the committed file is what
this builds and runs every panel's query against a real Prometheus.

Plain dictionaries in Grafana's dashboard JSON model (schemaVersion 39): no
SDK dependency for one dashboard of timeseries panels.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..core.manifest import Manifest, Metric, Panel, Target
from ..core.series import PREFIX
from ..probes import Registry

DS = {"type": "prometheus", "uid": "${datasource}"}
# What a manifest's expressions say, and what they stand for here.
# $netns holds namespace names (netns_name: those under /run/netns, and
# pods' where the exporter knows them): what a user recognises, not inodes.
SELECTORS = {
    "SEL": 'instance=~"$instance"',
    "NS": 'instance=~"$instance", netns_name=~"$netns"',
    "DEV": 'instance=~"$instance", netns_name=~"$netns", device=~"$device"',
    "RATE": "$__rate_interval",
}
_PLACEHOLDER = re.compile(r"\$(SEL|NS|DEV|RATE)\b")
# Labels a probe's series may carry (a label feature, `--label cgroup`): a
# variable each on the dashboard, and the matcher added to that probe's
# panels only. A series without the label matches the variable's "All" (.*).
OPTIONAL_LABELS = (("cgroup", "Cgroup"), ("pod", "Pod"))

HEALTH = (
    "Exporter health",
    (
        Panel(
            "Probes attached",
            "short",
            (Target("{{probe}} {{hook}}", "pyprobe_probe_attached{$SEL}"),),
        ),
        Panel(
            "Collector time per scrape",
            "s",
            (Target("{{collector}}", "pyprobe_scrape_collector_duration_seconds{$SEL}"),),
        ),
        Panel(
            "BPF maps: entries / capacity",
            "percentunit",
            (
                Target(
                    "{{probe}} {{map}}", "pyprobe_map_entries{$SEL} / pyprobe_map_max_entries{$SEL}"
                ),
            ),
        ),
        Panel(
            "Events lost /s",
            "ops",
            (Target("{{probe}}", "sum by (probe) (rate(pyprobe_events_lost_total{$SEL}[$RATE]))"),),
        ),
    ),
)


def expand(expr: str, extra: tuple[str, ...] = ()) -> str:
    """A manifest's expression with the dashboard's selectors; extra: the
    optional labels (OPTIONAL_LABELS) this probe's series carry."""
    more = "".join(f', {name}=~"${name}"' for name in extra)

    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        return SELECTORS[key] + (more if key != "RATE" else "")

    return _PLACEHOLDER.sub(sub, expr)


def optional_labels(manifest: Manifest) -> tuple[str, ...]:
    names = {lb.name for m in manifest.metrics for lb in m.labels}
    return tuple(name for name, _ in OPTIONAL_LABELS if name in names)


def generated(metric: Metric) -> Panel:
    """A metric's panel where the manifest gives none: a counter's rate, a
    gauge's value, a histogram's p99, summed by its labels but the CPU."""
    labels = [lb.name for lb in metric.labels if lb.name not in ("cpu", "netns_name")]
    selector = "$DEV" if "device" in labels else "$NS" if "netns" in labels else "$SEL"
    by = ", ".join(labels)
    legend = " ".join(f"{{{{{name}}}}}" for name in labels)
    name = PREFIX + metric.name
    if metric.type == "counter":
        return Panel(
            f"{metric.name} /s",
            "ops",
            (Target(legend, f"sum by ({by}) (rate({name}{{{selector}}}[$RATE]))"),),
        )
    if metric.type == "histogram":
        expr = (
            f"histogram_quantile(0.99, sum by ({', '.join(['le', *labels])}) "
            f"(rate({name}_bucket{{{selector}}}[$RATE])))"
        )
        return Panel(f"{metric.name} p99", "short", (Target(legend, expr),))
    return Panel(metric.name, "short", (Target(legend, f"sum by ({by}) ({name}{{{selector}}})"),))


Row = tuple[str, tuple[Panel, ...], tuple[str, ...]]  # title, panels, optional labels


def rows(registry: Registry) -> list[Row]:
    out = []
    for manifest in _manifests(registry):
        out.append(_row(manifest))
    out.append((*HEALTH, ()))
    return out


def _manifests(registry: Registry) -> list[Manifest]:
    probes = [registry.manifests[n] for n in registry.names()]
    return sorted(probes, key=lambda m: (m.rank, m.name))


def _row(manifest: Manifest) -> Row:
    dashboard = manifest.dashboard
    title = dashboard.title if dashboard else manifest.summary
    panels = dashboard.panels if dashboard and dashboard.panels else ()
    return (
        title,
        panels or tuple(generated(m) for m in manifest.metrics),
        optional_labels(manifest),
    )


def variables(registry: Registry) -> list[dict]:
    """instance, netns (by name), device; cgroup and pod where a probe's
    series can carry them (read from the first metric that has the label)."""
    out = [
        variable("instance", "label_values(pyprobe_build_info, instance)", "Instance"),
        variable(
            "netns",
            'label_values(pyprobe_tcp_sockets{instance=~"$instance"}, netns_name)',
            "Network namespace",
        ),
        variable(
            "device",
            'label_values(pyprobe_netdev_receive_packets_total{instance=~"$instance"}, device)',
            "Device",
        ),
    ]
    for label, title in OPTIONAL_LABELS:
        metric = next(
            (
                m
                for manifest in _manifests(registry)
                for m in manifest.metrics
                if label in {lb.name for lb in m.labels}
            ),
            None,
        )
        if metric is not None:
            series = PREFIX + metric.name
            query = f'label_values({series}{{instance=~"$instance"}}, {label})'
            out.append(variable(label, query, title))
    return out


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


def build(registry: Registry) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row_title, row_panels, extra in rows(registry):
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})  # fmt: skip
        pid, y = pid + 1, y + 1
        for i, panel in enumerate(row_panels):
            panels.append(
                {
                    "id": pid,
                    "type": "timeseries",
                    "title": panel.title,
                    "datasource": DS,
                    "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                    "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                    "options": {
                        "legend": {"displayMode": "table", "placement": "bottom"},
                        "tooltip": {"mode": "multi"},
                    },
                    "targets": [
                        {
                            "refId": chr(65 + n),
                            "datasource": DS,
                            "expr": expand(t.expr, extra),
                            "legendFormat": t.legend,
                        }
                        for n, t in enumerate(panel.targets)
                    ],
                }
            )
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
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                },
                *variables(registry),
            ]
        },
        "panels": panels,
    }


def render(registry: Registry) -> str:
    return json.dumps(build(registry), indent=2, ensure_ascii=False) + "\n"
