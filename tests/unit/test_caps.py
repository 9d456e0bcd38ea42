"""Label caps: the first N values of a label keep their series, the rest are
summed into "other" and counted as folded; a value gone for RELEASE_AFTER
collections frees its slot; a family with nothing to fold is left as it is."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from pyprobe.exporter.caps import OTHER, RELEASE_AFTER, LabelCaps


def family(devices: dict[str, float]) -> CounterMetricFamily:
    f = CounterMetricFamily("pkts", "packets", labels=["device", "dir"])
    for dev, v in devices.items():
        f.add_metric([dev, "tx"], v)
    return f


def series(f) -> dict[str, float]:
    return {s.labels["device"]: s.value for s in f.samples}


def test_over_the_cap_sums_into_other_and_counts_folded_values():
    caps = LabelCaps({"device": 2})
    out = caps.apply(family({"a": 1, "b": 2, "c": 3, "d": 4}))
    assert series(out) == {"a": 1, "b": 2, OTHER: 7}
    assert caps.folded() == [("pkts", "device", 2)]
    # sticky: a and b keep their own series however the values grow
    assert series(caps.apply(family({"d": 40, "c": 30, "b": 20, "a": 10}))) == {
        "a": 10,
        "b": 20,
        OTHER: 70,
    }


def test_nothing_to_fold_leaves_the_samples_as_they_were():
    caps = LabelCaps({"device": 2})
    f = family({"a": 1, "b": 2})
    samples = f.samples
    assert caps.apply(f).samples is samples


def test_a_value_gone_for_long_enough_gives_its_slot_up():
    caps = LabelCaps({"device": 1})
    assert series(caps.apply(family({"old": 1}))) == {"old": 1}
    assert series(caps.apply(family({"old": 1, "new": 5}))) == {"old": 1, OTHER: 5}
    for _ in range(RELEASE_AFTER):
        caps.apply(family({"new": 5}))
    assert series(caps.apply(family({"new": 6}))) == {"new": 6}


def test_histogram_bounds_are_never_capped():
    caps = LabelCaps({"le": 1})
    h = HistogramMetricFamily("h", "h", labels=["device"])
    h.add_metric(["a"], [("1.0", 1), ("2.0", 2), ("+Inf", 3)], 4)
    out = caps.apply(h)
    assert [s.labels.get("le") for s in out.samples if s.name == "h_bucket"] == [
        "1.0",
        "2.0",
        "+Inf",
    ]
