"""The exporter's text and OpenMetrics encoders write exactly what
prometheus_client's generate_latest functions write, on the first scrape and
on later ones (their texts kept), for every metric type and awkward value."""

from __future__ import annotations

import math

import pytest
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
from prometheus_client.exposition import choose_encoder
from prometheus_client.samples import Exemplar

from pyprobe.exporter import textformat
from pyprobe.exporter.server import PROMETHEUS_HEADERS, Server
from pyprobe.exporter.textformat import OpenMetricsEncoder, TextEncoder


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


class MoreFamilies(Families):
    """What OpenMetrics writes differently: units, exemplars, names the
    underscores escaping rewrites."""

    def collect(self):
        yield from super().collect()
        yield GaugeMetricFamily("temp_celsius", "with a unit", value=21.5, unit="celsius")
        yield GaugeMetricFamily("ns:rule:rate", "a recording rule's name", value=self.scale)
        c = CounterMetricFamily("ex", "with an exemplar", labels=["a"])
        c.add_metric(["x"], 4 * self.scale)
        c.samples[0] = c.samples[0]._replace(exemplar=Exemplar({"trace_id": "abc"}, 1.0))
        yield c


# What Prometheus sends (2.x; 3.x), a bare type, and the plain text format
ACCEPTS = [
    PROMETHEUS_HEADERS["Accept"],
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,*/*;q=0.1",
    "application/openmetrics-text",
    "application/openmetrics-text;version=1.0.0;escaping=dots",
    "text/plain;version=0.0.4",
    "",
]


@pytest.mark.parametrize("accept", ACCEPTS)
def test_every_format_a_scraper_asks_for_is_the_librarys_bytes(accept):
    families = MoreFamilies()
    registry = CollectorRegistry(auto_describe=False)
    registry.register(families)
    server = Server.__new__(Server)  # no socket: only its choice of writer
    server.text, server.openmetrics = TextEncoder(), {}
    reference, ctype = choose_encoder(accept)
    ours, our_ctype = server.encoder(accept)
    assert our_ctype == ctype
    if "openmetrics" in ctype:
        assert isinstance(ours, OpenMetricsEncoder)
        assert server.encoder(accept)[0] is ours  # kept: scrapes queued behind it share it
    for scale in (1.0, 2.5, 1e9):
        families.scale = scale
        assert ours(registry) == reference(registry)
