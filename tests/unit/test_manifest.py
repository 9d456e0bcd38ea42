"""Manifests: the shipped ones load; malformed ones fail with file and key named."""

from pathlib import Path

import pytest

from pyprobe.core import manifest
from pyprobe.paths import bpf_dir
from pyprobe.probes import default

GOOD = """
[probe]
name = "demo"
summary = "x"
[[hooks]]
kind = "tracepoint"
target = "a:b"
function = "f"
[[maps]]
name = "m"
type = "percpu_array"
entries = 4
[[metrics]]
name = "m_total"
type = "counter"
map = "m"
help = "h"
labels = [{ name = "l", slots = 4, decoder = "uint" }]
"""


def parse(text: str, stem: str = "demo"):
    return manifest.parse(text, Path(f"/x/{stem}.toml"), bpf_dir())


def test_shipped_manifests_load_and_pair_with_programs():
    found = default().manifests
    assert "tcpstates" in found
    for m in found.values():
        # an on-demand probe (trace) streams to its own command: no metrics
        assert m.metrics or (m.on_demand and m.event)
        # a probe with hooks has its program; one without reads only what
        # the kernel counts (conntrack)
        assert m.program.is_file() if m.hooks else all(x.source for x in m.metrics)
    assert not found["conntrack"].hooks


def test_on_demand_probes_are_not_the_exporters():
    registry = default()
    assert registry.manifests["trace"].on_demand
    assert "trace" not in registry.names()
    assert all(not registry.manifests[n].on_demand for n in registry.names())


def test_a_probe_of_kernel_counters_alone_needs_no_hook_nor_program():
    counters = GOOD.split("[[hooks]]")[0] + (
        '\n[[metrics]]\nname = "x"\ntype = "gauge"\nsource = "softirqs"\nvalue = "value"\n'
        'help = "x"\nlabels = [{ name = "cpu" }]\n'
    )
    m = parse(counters)
    assert not m.hooks and [x.source for x in m.metrics] == ["softirqs"]


def test_good_manifest():
    m = parse(GOOD)
    assert m.hooks[0].label == "tracepoint:a:b"
    assert m.metrics[0].labels[0].slots == 4


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            lambda t: t.replace('kind = "tracepoint"', 'kind = "uprobe"'),
            "demo.toml: hooks[0].kind: 'uprobe' is not one of "
            "tp_btf, raw_tracepoint, tracepoint, kprobe",
        ),
        (lambda t: t.replace('function = "f"\n', ""), "demo.toml: hooks[0].function: missing"),
        (
            lambda t: t.replace("entries = 4", "entries = -1"),
            "demo.toml: maps[0].entries: must be > 0",
        ),
        (
            lambda t: t.replace("entries = 4", 'entries = "4"'),
            "demo.toml: maps[0].entries: expected int, got str",
        ),
        (
            lambda t: t.replace('map = "m"', 'map = "nope"'),
            "demo.toml: metrics m_total: no map named 'nope'",
        ),
        (
            lambda t: t.replace('name = "demo"', 'name = "other"'),
            "demo.toml: probe.name 'other' must match the file stem 'demo'",
        ),
        (lambda t: t + "\n[[[", "demo.toml: not valid TOML"),
        (
            lambda t: t.replace('function = "f"', 'function = "f"\ndeferred = true'),
            "demo.toml: hooks[0].deferred: a:b: only tp_btf or raw_tracepoint defer",
        ),
        (lambda t: t.split("[[hooks]]")[0], "demo.toml: hooks: at least one hook is required"),
        (
            lambda t: t.replace('target = "a:b"', 'target = "a:b"\nneeds = ["magic"]'),
            "demo.toml: hooks[0].needs: 'magic' is not one of offsets, btf",
        ),
        (
            lambda t: t.replace("entries = 4", "entries = true"),
            "demo.toml: maps[0].entries: expected int, got bool",
        ),
        (
            lambda t: t.replace("entries = 4", "entries = 4\nfront = 8"),
            "demo.toml: maps m: front is a power of two up to 4096 (slots) and goes with "
            "type percpu_hash only",
        ),
        (
            lambda t: t.replace('"percpu_array"', '"percpu_hash"').replace(
                "entries = 4", "entries = 4\nfront = 48"
            ),
            "demo.toml: maps m: front is a power of two",
        ),
    ],
)
def test_malformed_manifests(mutate, message):
    with pytest.raises(manifest.ManifestError) as e:
        parse(mutate(GOOD))
    assert str(e.value).startswith(message)


def test_missing_program_is_named(tmp_path):
    path = tmp_path / "demo.toml"
    path.write_text(GOOD)
    with pytest.raises(manifest.ManifestError, match=r"its program demo\.bpf\.c is missing"):
        manifest.load(path, tmp_path)


def test_unknown_probe_lists_known():
    from pyprobe.errors import PyprobeError

    with pytest.raises(PyprobeError, match=r"unknown probe 'nope'; known probes: .*tcpstates"):
        default().create("nope")


def test_a_front_names_its_two_maps():
    fronted = GOOD.replace('"percpu_array"', '"percpu_hash"')
    m = parse(fronted.replace("entries = 4", "entries = 4\nfront = 8"))
    assert m.maps[0].front == 8
    assert m.maps[0].front_maps == ("m_fkeys", "m_front")
    assert parse(GOOD).maps[0].front_maps == ()
