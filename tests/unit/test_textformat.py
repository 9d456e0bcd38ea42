"""The exporter's text encoder writes exactly what prometheus_client's
generate_latest writes, on the first scrape and on later ones (its label
texts kept), for every metric type and awkward value."""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    SummaryMetricFamily,
)

from pyprobe.exporter import textformat
from pyprobe.exporter.textformat import TextEncoder


class Families:
    def __init__(self) -> None:
        self.scale = 1.0

    def collect(self):
        k = self.scale
        c = CounterMetricFamily("c", 'doc with \\ and\nnewline "quoted"', labels=["dev", "a"])
        c.add_metric(["eth0", 'quote"back\\slash\nnl'], 3 * k)
        c.add_metric(["eth1", ""], 123456789.0 * k, timestamp=1700000000.5)
        c.add_metric(["é-ünï", "x"], math.nan)
        yield c
        yield CounterMetricFamily("created", "with _created", value=2 * k, created=1600000000.25)
        g = GaugeMetricFamily("g", "gauge", labels=["z", "b"])
        for v in (math.inf, -math.inf, 0.1, -0.0, 1e7 * k, 1e-9, 12345678.9, 0):
            g.add_metric([str(v), "b"], v)
        yield g
        yield GaugeMetricFamily("plain", "no labels", value=42 * k)
        h = HistogramMetricFamily("h", "histogram", labels=["dev"])
        h.add_metric(["eth0"], [("1.0", 1 * k), ("2.0", 3 * k), ("+Inf", 4 * k)], 7.5 * k)
        yield h
        gh = GaugeHistogramMetricFamily("gh", "gauge histogram", labels=["q"])
        gh.add_metric(["recv"], [("1.0", 2), ("+Inf", 5 * k)], gsum_value=9 * k)
        yield gh
        s = SummaryMetricFamily("s", "summary", labels=["x"])
        s.add_metric(["1"], count_value=3 * k, sum_value=1.5)
        yield s
        yield InfoMetricFamily("build", "info", value={"version": "1.2", "python": "3.11"})
        u = Metric("u", "unknown type", "unknown")
        u.add_sample("u", {"l": "v"}, 5 * k)
        yield u


def test_same_bytes_as_generate_latest_first_and_later_scrapes():
    families = Families()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(families)
    encoder = TextEncoder()
    for scale in (1.0, 2.5, 1e9):  # later scrapes take label texts from the cache
        families.scale = scale
        assert encoder(registry) == generate_latest(registry)


def test_label_texts_start_over_past_the_bound(monkeypatch):
    monkeypatch.setattr(textformat, "MAX_KEPT", 3)
    families = Families()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(families)
    encoder = TextEncoder()
    assert encoder(registry) == generate_latest(registry)
    assert len(encoder._labels) <= 3
    assert encoder(registry) == generate_latest(registry)
