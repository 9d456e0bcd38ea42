"""The exporter's pieces that need no kernel: web config, label caps, options."""

from __future__ import annotations

import bcrypt
import pytest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from pyprobe.errors import PyprobeError
from pyprobe.exporter import webconfig
from pyprobe.exporter.caps import OTHER, RELEASE_AFTER, LabelCaps, parse_caps
from pyprobe.exporter.daemon import select
from pyprobe.exporter.server import gzip_accepted, parse_address, parse_path
from pyprobe.probes import default


def write(tmp_path, text: str):
    p = tmp_path / "web.yml"
    p.write_text(text)
    return p


def test_empty_or_absent_config_means_plain_http_without_auth(tmp_path):
    assert webconfig.load(None).tls is None
    cfg = webconfig.load(write(tmp_path, ""))
    assert cfg.tls is None and cfg.users == {}


def test_basic_auth_checks_bcrypt_and_remembers_success(tmp_path):
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode().replace("$2b$", "$2y$")
    cfg = webconfig.load(write(tmp_path, f"basic_auth_users:\n  alice: '{hashed}'\n"))
    assert cfg.authorized("alice", "pw")
    assert cfg.authorized("alice", "pw")  # from the cache
    assert not cfg.authorized("alice", "nope")
    assert not cfg.authorized("bob", "pw")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[1, 2]", "expected a mapping at the top level"),
        (
            "tls_server_config:\n  cert_file: a\n  bogus: 1\n",
            "tls_server_config.bogus: unknown key",
        ),
        ("tls_server_config:\n  key_file: k\n", "tls_server_config.cert_file: required"),
        ("tls_server_config:\n  cert_file: nope.pem\n  key_file: k\n", "no such file"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n"
            "  client_auth_type: RequireAnyClientCert\n",
            "RequireAnyClientCert: requiring a client certificate without verifying it is not "
            "supported",
        ),
        ("basic_auth_users:\n  a: 1234\n", "expected a bcrypt hash"),
        ("http_server_config:\n  headers: [x]\n", "headers: expected a mapping"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path, text, message):
    with pytest.raises(webconfig.ConfigError, match=message) as e:
        webconfig.load(write(tmp_path, text))
    # the path as given: with several configs about, a bare name is ambiguous
    assert str(e.value).startswith(f"{tmp_path / 'web.yml'}: ")


def test_old_tls_is_refused(tmp_path):
    (tmp_path / "a").write_text("x")
    (tmp_path / "b").write_text("x")
    text = "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS10\n"
    with pytest.raises(webconfig.ConfigError, match="older TLS is refused"):
        webconfig.load(write(tmp_path, text))


def family(n: int) -> CounterMetricFamily:
    f = CounterMetricFamily("pyprobe_x", "h", labels=["device", "state"])
    for i in range(n):
        f.add_metric([f"dev{i}", "up"], i + 1)
    return f


def test_caps_fold_the_rest_into_other_and_stay_sticky():
    caps = LabelCaps({"device": 3})
    first = caps.apply(family(5))
    values = {s.labels["device"]: s.value for s in first.samples}
    assert values == {"dev0": 1, "dev1": 2, "dev2": 3, OTHER: 4 + 5}
    # a new big series later does not displace the sticky ones
    f = family(5)
    f.add_metric(["dev9", "up"], 1000)
    values = {s.labels["device"]: s.value for s in caps.apply(f).samples}
    assert values[OTHER] == 4 + 5 + 1000 and "dev9" not in values
    assert list(caps.folded()) == [("pyprobe_x", "device", 3)]


def test_caps_release_the_slot_of_a_value_that_is_gone():
    caps = LabelCaps({"device": 2})
    caps.apply(family(2))  # dev0, dev1 hold the slots
    gone = CounterMetricFamily("pyprobe_x", "h", labels=["device", "state"])
    gone.add_metric(["dev1", "up"], 1)  # dev0 deleted
    for _ in range(RELEASE_AFTER - 2):
        caps.apply(gone)
    # dev0 absent from RELEASE_AFTER - 1 collections: "new" still folds

    def late() -> CounterMetricFamily:
        f = CounterMetricFamily("pyprobe_x", "h", labels=["device", "state"])
        f.add_metric(["dev1", "up"], 1)
        f.add_metric(["new", "up"], 7)
        return f

    assert {s.labels["device"] for s in caps.apply(late()).samples} == {"dev1", OTHER}
    # ... and from RELEASE_AFTER (this one included): its slot goes to "new"
    assert {s.labels["device"] for s in caps.apply(late()).samples} == {"dev1", "new"}


def test_label_cap_option():
    assert parse_caps(["netns=5", "device = 7"]) == {"netns": 5, "device": 7}
    for bad in ("netns", "netns=0", "=3", "netns=-1", "netns=x", "netns=1000000"):
        with pytest.raises(PyprobeError, match="bad --label-cap"):
            parse_caps([bad])


def test_caps_merge_histograms_bucket_by_bucket():
    caps = LabelCaps({"device": 1})
    h = HistogramMetricFamily("pyprobe_h", "h", labels=["device"])
    h.add_metric(["a"], [("1.0", 1), ("+Inf", 2)], 5)
    h.add_metric(["b"], [("1.0", 3), ("+Inf", 3)], 1)
    h.add_metric(["c"], [("1.0", 0), ("+Inf", 4)], 9)
    out = {
        (s.name, s.labels.get("device"), s.labels.get("le")): s.value for s in caps.apply(h).samples
    }
    assert out[("pyprobe_h_bucket", OTHER, "1.0")] == 3
    assert out[("pyprobe_h_bucket", OTHER, "+Inf")] == 7
    assert out[("pyprobe_h_sum", OTHER, None)] == 10
    assert out[("pyprobe_h_bucket", "a", "+Inf")] == 2


def test_probe_selection_and_addresses():
    assert "napi" not in select(default(), (), ("napi",))
    assert select(default(), ("drops",), ()) == {"drops": None}
    assert select(default(), ("netdev.sizes", "netdev.queued"), ()) == {
        "netdev": frozenset({"sizes", "queued"})
    }
    assert select(default(), ("*.all",), ("drops",))["softirqs"] == frozenset({"time", "raises"})
    with pytest.raises(
        PyprobeError, match="netdev: no feature 'size'; its features: queued, sizes"
    ):
        select(default(), ("netdev.size",), ())
    with pytest.raises(PyprobeError, match="unknown probe 'nope'"):
        select(default(), ("nope",), ())
    assert parse_address("127.0.0.1:9977") == ("127.0.0.1", 9977)
    assert parse_address("[::1]:9977") == ("::1", 9977)
    for bad in ("9977", "host:port", "1.2.3.4:70000"):
        with pytest.raises(PyprobeError, match=r"bad --web\.listen-address"):
            parse_address(bad)


def test_telemetry_path():
    assert parse_path("/metrics") == "/metrics"
    assert parse_path("/pyprobe/metrics") == "/pyprobe/metrics"
    for bad in ("metrics", "/", "", "/a b", "/m?x=1", "/m#f"):
        with pytest.raises(PyprobeError, match=r"bad --web\.telemetry-path .*such as /metrics"):
            parse_path(bad)


@pytest.mark.parametrize(
    ("header", "gzip"),
    [
        ("gzip", True),  # what Prometheus sends
        ("gzip, deflate, br", True),
        ("deflate, GZIP;q=0.5", True),
        ("gzip;q=0", False),
        ("gzip;q=0.000", False),
        ("gzip;q=bogus", False),
        ("identity", False),
        ("x-gzip", False),
        ("", False),
    ],
)
def test_gzip_only_when_asked_for(header, gzip):
    assert gzip_accepted(header) is gzip


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "tls_server_config: [",
            ": not valid YAML at line 1, column 21: expected the node content, but found",
        ),
        (
            "a: b\n  c: d\n",
            ": not valid YAML at line 2, column 4: mapping values are not allowed here",
        ),
        (
            "\tfoo: 1",
            ": not valid YAML at line 1, column 1: found character '\\t' that cannot start",
        ),
    ],
)
def test_bad_yaml_says_where_and_what(tmp_path, text, said):
    path = write(tmp_path, text)
    with pytest.raises(webconfig.ConfigError) as e:
        webconfig.load(str(path))
    assert str(e.value).startswith(str(path) + said), str(e.value)
    assert "\n" not in str(e.value)
