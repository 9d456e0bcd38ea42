"""The Prometheus text format (0.0.4), byte for byte what prometheus_client's
generate_latest writes, at a third of its cost.

generate_latest checks and escapes every label name and value of every
sample on every scrape (about 10 µs a sample: half of a 10k-socket scrape's
~400 series). Our series repeat from scrape to scrape, so a series' label
text is built once and kept, keyed by its labels as the collector gave them;
names are escaped once each. Only the value is formatted per scrape.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client.utils import floatToGoString

try:  # prometheus_client >= 0.22 escapes names it cannot write as they are
    from prometheus_client.openmetrics.exposition import (
        UNDERSCORES,
        escape_label_name,
        escape_metric_name,
    )
except ImportError:  # older ones (Debian 12's 0.16) write names as they are

    def escape_metric_name(s: str, escaping: str = "") -> str:
        return s

    escape_label_name = escape_metric_name
    UNDERSCORES = "underscores"

# prometheus_client's mapping of OpenMetrics types onto the text format
TEXT_NAME = {"counter": "_total", "info": "_info"}
TEXT_TYPE = {
    "info": "gauge",
    "stateset": "gauge",
    "gaugehistogram": "histogram",
    "unknown": "untyped",
}
OM_SUFFIXES = ("_created", "_gsum", "_gcount")  # put in gauges of their own, after the family
MAX_KEPT = 50_000  # label texts kept; past it the cache starts over (labels have caps anyway)


@functools.lru_cache(maxsize=4096)
def metric_name(name: str) -> str:
    return escape_metric_name(name, UNDERSCORES)


@functools.lru_cache(maxsize=4096)
def label_name(name: str) -> str:
    return escape_label_name(name, UNDERSCORES)


def label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


@functools.lru_cache(maxsize=1024)
def help_lines(name: str, documentation: str, kind: str) -> str:
    doc = documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {metric_name(name)} {doc}\n# TYPE {metric_name(name)} {kind}\n"


class TextEncoder:
    """encode(registry) -> bytes, like generate_latest(registry)."""

    def __init__(self) -> None:
        self._labels: dict[tuple, str] = {}

    def _label_text(self, labels: dict[str, str]) -> str:
        key = tuple(labels.items())
        text = self._labels.get(key)
        if text is None:
            if len(self._labels) >= MAX_KEPT:
                self._labels.clear()
            pairs = ",".join(
                f'{label_name(k)}="{label_value(v)}"' for k, v in sorted(labels.items())
            )
            text = self._labels[key] = "{" + pairs + "}" if pairs else ""
        return text

    def _line(self, sample: Any) -> str:
        labels = self._label_text(sample.labels) if sample.labels else ""
        stamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
        return f"{metric_name(sample.name)}{labels} {floatToGoString(sample.value)}{stamp}\n"

    def encode(self, registry: Any) -> bytes:
        out: list[str] = []
        for metric in registry.collect():
            kind = metric.type
            name = metric.name + TEXT_NAME.get(kind, "")
            out.append(help_lines(name, metric.documentation, TEXT_TYPE.get(kind, kind)))
            extra: dict[str, list[str]] = {}
            om_names = {metric.name + suffix: suffix for suffix in OM_SUFFIXES}
            for sample in metric.samples:
                suffix = om_names.get(sample.name)
                if suffix is None:
                    out.append(self._line(sample))
                else:
                    extra.setdefault(suffix, []).append(self._line(sample))
            for suffix, lines in sorted(extra.items()):
                out.append(help_lines(metric.name + suffix, metric.documentation, "gauge"))
                out.extend(lines)
        return "".join(out).encode("utf-8")

    __call__ = encode
