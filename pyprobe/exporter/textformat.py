"""The Prometheus text format (0.0.4) and OpenMetrics, byte for byte what
prometheus_client's generate_latest functions write, at a fraction of their cost.

generate_latest checks and escapes every label name and value of every
sample on every scrape (about 10 µs a sample: half of a 10k-socket scrape's
~400 series). Our series repeat from scrape to scrape, so a series' label
text is built once and kept, keyed by its labels as the collector gave them;
names are escaped once each. Only the value is formatted per scrape.
"""

from __future__ import annotations

import copy
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


class _One:
    """A registry of one metric, to have the library render it."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric

    def collect(self) -> Any:
        yield self.metric


EOF = "# EOF\n"


def _family(metric: Any) -> Any:
    """The family without its samples (a copy: no name checks run again)."""
    empty = copy.copy(metric)
    empty.samples = []
    return empty


class OpenMetricsEncoder:
    """encode(registry) -> bytes, like `reference(registry)`: the OpenMetrics
    generate_latest prometheus_client chose for the request's Accept header
    (with its escaping and version). Prometheus asks for OpenMetrics first, and
    the library's writer escapes every sample's name a character at a time.

    What a series' line has before its value, and a family's HELP/TYPE/UNIT
    lines, are rendered once by the reference itself (a one-sample family) and
    kept, so the bytes are the library's in any of its versions. A family with
    exemplars or native histograms (no collector of ours makes them) is
    rendered by the reference whole."""

    def __init__(self, reference: Any) -> None:
        self.reference = reference
        self._heads: dict[tuple, str] = {}
        self._prefixes: dict[tuple, str] = {}

    def _render(self, metric: Any) -> str:
        text: str = self.reference(_One(metric)).decode("utf-8")
        return text[: -len(EOF)] if text.endswith(EOF) else text

    def _head(self, metric: Any) -> str:
        key = (metric.name, metric.documentation, metric.type, metric.unit)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) >= MAX_KEPT:
                self._heads.clear()
            head = self._heads[key] = self._render(_family(metric))
        return head

    def _prefix(self, metric: Any, sample: Any) -> str:
        key = (sample.name, tuple(sample.labels.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) >= MAX_KEPT:
                self._prefixes.clear()
            one = _family(metric)
            one.add_sample(sample.name, sample.labels, 0.0)
            line = self._render(one)[len(self._head(metric)) :]
            prefix = self._prefixes[key] = line[: -len(" 0.0\n")]
        return prefix

    def encode(self, registry: Any) -> bytes:
        out: list[str] = []
        for metric in registry.collect():
            if any(s.exemplar or getattr(s, "native_histogram", None) for s in metric.samples):
                out.append(self._render(metric))
                continue
            out.append(self._head(metric))
            for s in metric.samples:
                stamp = "" if s.timestamp is None else f" {s.timestamp}"
                out.append(f"{self._prefix(metric, s)} {floatToGoString(s.value)}{stamp}\n")
        out.append(EOF)
        return "".join(out).encode("utf-8")

    __call__ = encode
