"""The Prometheus rules, generated mixin-style from one config file
(dashboards/rules/config.yml): the selector every series is read with, the
labels alerts keep (cluster, job, instance: one alert per target), the rate
window, and per alert its threshold, `for:` and severity. The expressions
below hold no number of their own. `pyprobe rules` prints the rules;
dashboards/build.py writes dashboards/rules/pyprobe.rules.yml, and a test
checks the committed file is this module's output.

Every alert carries a summary, a description and a runbook_url: the
config's runbook_base + "#" + the alert's section of docs/runbooks.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from ..errors import PyprobeError


@dataclass(frozen=True)
class Alert:
    name: str
    # (sel: the selector plus extra matchers, by: "cluster, job, instance",
    # window, alert config) -> expression without the comparison
    expr: Callable[[Callable[[str], str], str, str, Mapping[str, Any]], str]
    compare: str  # "> {threshold}", "== 0"
    summary: str
    description: str
    extra_keys: tuple[str, ...] = ()

    @property
    def has_threshold(self) -> bool:
        return "{threshold}" in self.compare

    @property
    def anchor(self) -> str:
        """The runbook section's anchor (GitHub's: the heading lowercased)."""
        return self.name.lower()


def _ignored(cfg: Mapping[str, Any]) -> str:
    reasons = cfg.get("ignore_reasons") or []
    return f'reason!~"{"|".join(reasons)}"' if reasons else ""


ALERTS = (
    Alert(
        "PyprobeProbeNotAttached",
        lambda sel, by, w, c: f"min by ({by}, probe) (pyprobe_probe_attached{{{sel('')}}})",
        "== 0",
        "pyprobe probe {{ $labels.probe }} is not attached on {{ $labels.instance }}",
        "None of the probe's hooks could be attached on this kernel, or its program failed "
        "to load: its metrics are missing. `pyprobe doctor` on the host says why.",
    ),
    Alert(
        "PyprobeCollectorFailing",
        lambda sel, by, w, c: (
            f"min by ({by}, collector) (pyprobe_scrape_collector_success{{{sel('')}}})"
        ),
        "== 0",
        "pyprobe collector {{ $labels.collector }} fails on {{ $labels.instance }}",
        "Every scrape of this collector fails (its series are missing from the scrape); "
        "the exporter logs the error at each scrape.",
    ),
    Alert(
        "PyprobeEventsLost",
        lambda sel, by, w, c: (
            f"sum by ({by}, probe) (increase(pyprobe_events_lost_total{{{sel('')}}}[{w}]))"
        ),
        "> {threshold}",
        "pyprobe {{ $labels.probe }} lost events on {{ $labels.instance }}",
        "{{ $value | humanize }} events lost in {window} (ring buffer full): the counts "
        "are still right, the per-event detail is not complete.",
    ),
    Alert(
        "PyprobeMapNearlyFull",
        lambda sel, by, w, c: (
            f"max by ({by}, probe, map) "
            f"(pyprobe_map_entries{{{sel('')}}} / pyprobe_map_max_entries{{{sel('')}}})"
        ),
        "> {threshold}",
        "BPF map {{ $labels.map }} of {{ $labels.probe }} is nearly full on {{ $labels.instance }}",
        "{{ $value | humanizePercentage }} of its entries are in use (alert above "
        "{threshold_pct}); once full, new keys are not counted (pyprobe_map_update_errors).",
    ),
    Alert(
        "PyprobeConfigReloadFailed",
        lambda sel, by, w, c: f"min by ({by}) (pyprobe_config_last_reload_successful{{{sel('')}}})",
        "== 0",
        "pyprobe on {{ $labels.instance }} kept its old config: the new one is invalid",
        "The last SIGHUP found an invalid web config; the exporter serves with the previous "
        "one and logs why.",
    ),
    Alert(
        "PyprobePacketDrops",
        lambda sel, by, w, c: (
            f"sum by ({by}, reason) (rate(pyprobe_drops_total{{{sel(_ignored(c))}}}[{w}]))"
        ),
        "> {threshold}",
        "{{ $labels.instance }} drops {{ $value | humanize }} packets/s: {{ $labels.reason }}",
        "Packets freed by the kernel as dropped for reason {{ $labels.reason }} at "
        "{{ $value | humanize }}/s over {window} (alert above {threshold}/s; reasons "
        "configured as benign are left out).",
        ("ignore_reasons",),
    ),
    Alert(
        "PyprobeTcpRetransmits",
        lambda sel, by, w, c: (
            f"sum by ({by}, netns, netns_name) "
            f"(rate(pyprobe_tcp_retransmit_segments_total{{{sel('')}}}[{w}]))"
        ),
        "> {threshold}",
        "{{ $labels.instance }} netns {{ $labels.netns_name }} retransmits "
        "{{ $value | humanize }} segments/s",
        "TCP segments retransmitted in network namespace {{ $labels.netns_name }} "
        "({{ $labels.netns }}) at {{ $value | humanize }}/s over {window} "
        "(alert above {threshold}/s): loss or delay on the path.",
    ),
    Alert(
        "PyprobeAcceptQueueFull",
        lambda sel, by, w, c: (
            f"max by ({by}, netns, netns_name) (pyprobe_tcp_accept_queue_fill_ratio{{{sel('')}}})"
        ),
        "> {threshold}",
        "A listener's accept queue is nearly full on {{ $labels.instance }} "
        "({{ $labels.netns_name }})",
        "The fullest listener's accept queue in network namespace {{ $labels.netns_name }} "
        "is {{ $value | humanizePercentage }} full (alert above {threshold_pct}): the "
        "application does not accept() fast enough, and a full queue drops SYNs.",
    ),
)

# (record name with {window}, expression with {sel} {by} {window}, labels kept)
RECORDS = (
    ("instance_reason:pyprobe_drops:rate{window}", "pyprobe_drops_total", "reason"),
    (
        "instance_netns:pyprobe_tcp_retransmit_segments:rate{window}",
        "pyprobe_tcp_retransmit_segments_total",
        "netns, netns_name",
    ),
    (
        "instance_cpu:pyprobe_softirq_cpu_seconds:rate{window}",
        "pyprobe_softirq_cpu_seconds_total",
        "cpu",
    ),
    (
        "instance_device:pyprobe_netdev_receive_bytes:rate{window}",
        "pyprobe_netdev_receive_bytes_total",
        "netns, netns_name, device",
    ),
    (
        "instance_device:pyprobe_netdev_transmit_bytes:rate{window}",
        "pyprobe_netdev_transmit_bytes_total",
        "netns, netns_name, device",
    ),
)

TOP_KEYS = {"selector", "aggregate_by", "rate_window", "runbook_base", "alerts"}
ALERT_KEYS = {"threshold", "for", "severity"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
SEVERITIES = {"critical", "warning", "info"}

HEADER = """\
# Prometheus recording and alerting rules for pyprobe's exporter.
# GENERATED by `pyprobe rules` (pyprobe/views/rules.py) from config.yml next
# to this file: change that and regenerate (python dashboards/build.py), do
# not edit this file. Check: promtool check rules pyprobe.rules.yml
"""


def load_config(text: str, source: str = "config") -> dict[str, Any]:
    """The config, checked: every error names the file and the key."""
    try:
        cfg = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PyprobeError(f"{source}: not YAML: {e}") from None
    if not isinstance(cfg, dict):
        raise PyprobeError(f"{source}: a mapping of {', '.join(sorted(TOP_KEYS))} expected")
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise PyprobeError(f"{source}: unknown key {sorted(unknown)[0]!r}")
    for key in TOP_KEYS:
        if key not in cfg:
            raise PyprobeError(f"{source}: {key}: missing")
    if not isinstance(cfg["selector"], str):
        raise PyprobeError(f"{source}: selector: a string of matchers, e.g. 'job=\"pyprobe\"'")
    by = cfg["aggregate_by"]
    if not isinstance(by, list) or not by or not all(LABEL.match(str(b)) for b in by):
        raise PyprobeError(f"{source}: aggregate_by: a list of label names")
    if not DURATION.match(str(cfg["rate_window"])):
        raise PyprobeError(f"{source}: rate_window: a Prometheus duration (5m, 1h)")
    alerts = cfg["alerts"]
    if not isinstance(alerts, dict):
        raise PyprobeError(f"{source}: alerts: a mapping of alert name to its settings")
    known = {a.name: a for a in ALERTS}
    for name, settings in alerts.items():
        where = f"{source}: alerts.{name}"
        if name not in known:
            raise PyprobeError(f"{where}: no such alert (known: {', '.join(known)})")
        alert = known[name]
        if not isinstance(settings, dict):
            raise PyprobeError(f"{where}: a mapping of {', '.join(sorted(ALERT_KEYS))}")
        allowed = ALERT_KEYS | set(alert.extra_keys)
        if not alert.has_threshold:
            allowed.discard("threshold")
        unknown = set(settings) - allowed
        if unknown:
            raise PyprobeError(f"{where}: unknown key {sorted(unknown)[0]!r}")
        required = {"for", "severity"} | ({"threshold"} if alert.has_threshold else set())
        for key in sorted(required - set(settings)):
            raise PyprobeError(f"{where}.{key}: missing")
        if not DURATION.match(str(settings["for"])):
            raise PyprobeError(f"{where}.for: a Prometheus duration (0m, 5m, 1h)")
        if settings["severity"] not in SEVERITIES:
            raise PyprobeError(f"{where}.severity: one of {', '.join(sorted(SEVERITIES))}")
        threshold = settings.get("threshold", 0)
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise PyprobeError(f"{where}.threshold: a number")
    missing = [a.name for a in ALERTS if a.name not in alerts]
    if missing:
        raise PyprobeError(f"{source}: alerts.{missing[0]}: missing (every alert is configured)")
    return cfg


def build(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The rules file's content, from a checked config."""
    base = cfg["selector"].strip().strip("{}").strip()
    by = ", ".join(cfg["aggregate_by"])
    window = str(cfg["rate_window"])

    def sel(extra: str) -> str:
        return ", ".join(m for m in (base, extra) if m)

    records = [
        {
            "record": name.format(window=window),
            "expr": f"sum by ({by}, {labels}) (rate({metric}{{{sel('')}}}[{window}]))",
        }
        for name, metric, labels in RECORDS
    ]
    alerts = []
    for alert in ALERTS:
        c = cfg["alerts"][alert.name]
        threshold = c.get("threshold", 0)
        words = {
            "threshold": f"{threshold:g}",
            "threshold_pct": f"{threshold * 100:g}%",
            "window": window,
        }
        expr = alert.expr(sel, by, window, c) + " " + alert.compare.format(**words)
        rule: dict[str, Any] = {"alert": alert.name, "expr": expr}
        if str(c["for"]) not in ("0", "0s", "0m"):
            rule["for"] = str(c["for"])
        rule["labels"] = {"severity": c["severity"]}
        rule["annotations"] = {
            "summary": alert.summary,
            "description": _fill(alert.description, words),
            "runbook_url": f"{cfg['runbook_base']}#{alert.anchor}",
        }
        alerts.append(rule)
    return {
        "groups": [
            {"name": "pyprobe-recording", "rules": records},
            {"name": "pyprobe-alerts", "rules": alerts},
        ]
    }


def _fill(text: str, words: Mapping[str, str]) -> str:
    """{threshold}-style words filled in, Prometheus' {{ templates }} kept."""
    return re.sub(r"(?<!\{)\{(\w+)\}(?!\})", lambda m: words[m.group(1)], text)


def render(cfg: Mapping[str, Any]) -> str:
    body = yaml.safe_dump(build(cfg), sort_keys=False, width=200, allow_unicode=True)
    return HEADER + body
