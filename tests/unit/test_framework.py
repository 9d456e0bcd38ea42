"""The framework pieces the probe set stands on, with a fake loader: attach
points, struct and per-CPU keys, struct values, histograms, kernel-derived
names, pasted headers, deltas, the connection join."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fakes import FakeBTF, FakeLoader, fake_env
from prometheus_client import CollectorRegistry, generate_latest

from pyprobe.core import manifest
from pyprobe.core.decoders import Decoders
from pyprobe.core.hooks import choose
from pyprobe.core.probe import Probe
from pyprobe.kernel.names import kernel_names, print_symbolic
from pyprobe.kernel.symbols import Symbols
from pyprobe.load.program import program_text
from pyprobe.paths import bpf_dir
from pyprobe.probes import default
from pyprobe.views.conn import ConnView
from pyprobe.views.watch import row_key, with_deltas

MULTI = """
[probe]
name = "multi"
summary = "x"
[[hooks]]
kind = "raw_tracepoint"
attach = [
  { target = "one", function = "f1", min_args = 3 },
  { target = "two", function = "f2" },
  { target = "helper", function = "h", stream_only = true, kind = "tracepoint" },
]
cflags = ["-DRAW"]
[[hooks]]
kind = "tracepoint"
attach = [{ target = "cat:one", function = "t1", fields = ["reason"] }]
[[maps]]
name = "counts"
type = "percpu_hash"
entries = 8
[[maps]]
name = "hist"
type = "percpu_array"
entries = 128
[[maps]]
name = "cpu"
type = "percpu_array"
entries = 4
[[metrics]]
name = "bytes_total"
type = "counter"
map = "counts"
value = "bytes"
help = "h"
labels = [
  { name = "device", field = "ifindex" },
  { name = "state", field = "state", decoder = "tcp_state" },
]
[[metrics]]
name = "run_seconds"
type = "histogram"
map = "hist"
buckets = 64
scale = 1e-9
help = "h"
labels = [{ name = "vec", slots = 2 }]
[[metrics]]
name = "per_cpu_total"
type = "counter"
map = "cpu"
help = "h"
labels = [{ name = "cpu", field = "cpu" }, { name = "kind", slots = 4 }]
[[metrics]]
name = "size_bytes"
type = "histogram"
map = "counts"
value = "sizes[]"
buckets = 4
help = "h"
labels = [
  { name = "device", field = "ifindex" },
  { name = "direction", slots = 2, decoder = "direction" },
]
"""


def multi() -> manifest.Manifest:
    return manifest.parse(MULTI, Path("/x/multi.toml"), bpf_dir())


def test_attach_points_parse_with_their_options():
    hook = multi().hooks[0]
    assert [p.target for p in hook.points] == ["one", "two", "helper"]
    assert hook.points[0].min_args == 3 and hook.points[2].stream_only
    assert hook.points[2].kind == "tracepoint"
    assert hook.label == "raw_tracepoint:one+two"  # stream helpers left out
    assert multi().hooks[1].points[0].fields == ("reason",)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("buckets = 64\n", "", "buckets (> 1) goes with type histogram only"),
        (
            '{ name = "state", field = "state", decoder = "tcp_state" }',
            '{ name = "state", slots = 4 }',
            "labels use either field or slots",
        ),
        ('function = "f2"', "function = 2", "attach[1].function: expected str"),
        ('kind = "tracepoint" }', 'kind = "uprobe" }', "'uprobe' is not one of"),
    ],
)
def test_bad_framework_manifests(old, new, message):
    with pytest.raises(manifest.ManifestError, match=re.escape(message)):
        manifest.parse(MULTI.replace(old, new, 1), Path("/x/multi.toml"), bpf_dir())


def test_raw_tracepoint_with_too_few_args_falls_back_to_tracepoint_with_its_field():
    btf = FakeBTF({}, {"btf_trace_one", "btf_trace_two"}, args={"one": 2})
    env = fake_env(fake_btf=btf, tracepoints=frozenset({"cat:one"}), fields={"cat:one": {"x"}})
    choice = choose(multi(), env)
    assert choice.hook is None
    assert "fewer than 3 arguments" in choice.verdicts[0].reason
    assert "has no field reason" in choice.verdicts[1].reason
    env.fields = {"cat:one": {"reason"}}
    assert choose(multi(), env).hook.kind == "tracepoint"


def fake_probe(maps: dict) -> tuple[Probe, FakeLoader]:
    btf = FakeBTF({}, {"btf_trace_one", "btf_trace_two", "btf_trace_helper"})
    env = fake_env(fake_btf=btf, tracepoints=frozenset({"helper"}))
    loader = FakeLoader(maps)
    return Probe(multi(), env=env, loader=loader), loader


def test_stream_only_points_are_attached_only_with_the_stream():
    probe, loader = fake_probe({})
    probe.attach()
    assert [p.target for p in loader.programs[0].hook.points] == ["one", "two"]


def test_struct_keys_struct_values_histograms_and_per_cpu_keys():
    slot = lambda vec, k: vec * 64 + k  # noqa: E731
    maps = {
        # key (ifindex, state) + member index: 0 packets, 1 bytes
        "counts": {
            (1, 1, 0): 5,
            (1, 1, 1): 700,
            (2, 10, 1): 60,
            (2, 1, 1): 40,
            (1, 1, 2 + 0 * 4 + 1): 3,  # device 1, transmit, slot 1 (le 2)
            (1, 1, 2 + 1 * 4 + 2): 4,  # device 1, receive, slot 2 (le 4)
            (1, 1, 2 + 1 * 4 + 0): 1,  # device 1, receive, slot 0 (le 1)
        },
        "counts.fields": ("ifindex", "state"),
        # sizes[2][4], flattened: (direction, slot) -> member 2 + direction * 4 + slot
        "counts.leaf": ("packets", "bytes", *(f"sizes[{i}]" for i in range(8))),
        "hist": {slot(1, 0): 2, slot(1, 3): 1, slot(1, 63): 9000},
        "cpu": {(1, 0): 3, (1, 1): 4, (2, 1): 5},  # (key, cpu), per_cpu=True
    }
    probe, _ = fake_probe(maps)
    probe.attach()
    by_name = {m.name: m for m in probe.manifest.metrics}
    assert probe.series.samples(by_name["bytes_total"]) == [
        (("1", "ESTABLISHED"), 700),
        (("2", "ESTABLISHED"), 40),
        (("2", "LISTEN"), 60),
    ]
    [(labels, buckets, total)] = probe.series.histograms(by_name["run_seconds"])
    assert labels == ("1",) and sum(buckets) == 3 and buckets[3] == 1
    assert total == pytest.approx(9000e-9)
    assert probe.series.samples(by_name["per_cpu_total"]) == [
        (("0", "1"), 3),
        (("1", "1"), 4),
        (("1", "2"), 5),
    ]
    # an array value member: its index split into direction and slot
    assert probe.series.histograms(by_name["size_bytes"]) == [
        (("1", "receive"), [1, 0, 4], 0.0),
        (("1", "transmit"), [0, 3, 0], 0.0),
    ]
    reg = CollectorRegistry()
    reg.register(probe)
    text = generate_latest(reg).decode()
    assert 'pyprobe_run_seconds_bucket{le="8e-09",vec="1"} 3.0' in text
    assert 'pyprobe_run_seconds_bucket{le="1e-09",vec="1"} 2.0' in text
    assert 'pyprobe_run_seconds_count{vec="1"} 3.0' in text
    assert "pyprobe_bytes_total_total" not in text and "pyprobe_bytes_total{" in text


def test_print_symbolic_takes_the_named_fields_list():
    fmt = (
        'print fmt: "%s %s", REC->state ? __print_symbolic(REC->state, { TCP_ESTABLISHED, "E" })'
        ' : "x", __print_symbolic(REC->reason, { 0, "NOT_SPECIFIED" }, { 1, "NO_SOCKET" })'
    )
    assert print_symbolic(fmt, "reason") == {0: "NOT_SPECIFIED", 1: "NO_SOCKET"}
    assert print_symbolic(fmt, "nope") == {}


def test_kernel_names_fall_back_to_btf_without_tracefs():
    btf = FakeBTF({}, enums={"skb_drop_reason": {2: "SKB_DROP_REASON_NOT_SPECIFIED"}})
    env = fake_env(fake_btf=btf, tracefs=None)
    assert kernel_names(env, "skb:kfree_skb", "reason", "skb_drop_reason", "SKB_DROP_REASON_") == {
        2: "NOT_SPECIFIED"
    }
    assert Decoders(env).get("drop_reason")(7, {}) == "REASON_7"


def test_symbols_resolve_addresses_to_functions(tmp_path):
    (tmp_path / "kallsyms").write_text(
        "ffffffff81000000 T start\nffffffff81000100 t tcp_v4_rcv\nffffffff81000200 T next\n"
        "ffffffff81000180 d data_not_text\n0000000000000000 T hidden_without_root\n"
        "ffffffffc0000000 t veth_poll\t[veth]\n"
    )
    syms = Symbols(tmp_path / "kallsyms")
    assert syms.name(0xFFFFFFFF81000191) == "tcp_v4_rcv+0x91"
    assert syms.function(0xFFFFFFFF81000191) == "tcp_v4_rcv"
    assert syms.name(0x10) == "0x10"
    assert syms.function(0xFFFFFFFFC0000010) == "veth_poll"  # a module's, tag left off


def test_local_headers_are_pasted_once(tmp_path):
    (tmp_path / "a.h").write_text('#include "b.h"\nint a;\n')
    (tmp_path / "b.h").write_text("int b;\n")
    (tmp_path / "p.c").write_text('#include "a.h"\n#include "b.h"\n#include <linux/x.h>\nint p;\n')
    text = program_text(tmp_path / "p.c")
    assert text.count("int b;") == 1 and "int a;" in text and "#include <linux/x.h>" in text
    assert '#include "' not in text


def test_deltas_between_reports():
    first = with_deltas([{"metric": "m", "dev": "a", "value": 5}], {})
    assert first[0]["delta"] == 5
    second = with_deltas([{"metric": "m", "dev": "a", "value": 9}], {row_key(first[0]): first[0]})
    assert second[0]["delta"] == 4


def test_conn_view_folds_directions_and_ends():
    view = ConnView()
    base = {"time": 1.0, "owner_known": True, "pid": 7, "comm": "curl"}
    view.feed(
        "tcpretrans",
        [
            {
                **base,
                "kind": "retransmit",
                "segs": 3,
                "state": "ESTABLISHED",
                "saddr": "10.0.0.1",
                "sport": 5000,
                "daddr": "10.0.0.2",
                "dport": 80,
            }
        ],
    )
    view.feed(
        "drops",
        [
            {
                **base,
                "reason": "NETFILTER_DROP",
                "l4": "TCP",
                "owner_known": False,
                "saddr": "10.0.0.2",
                "sport": 80,
                "daddr": "10.0.0.1",
                "dport": 5000,
            }
        ],
    )
    view.feed(
        "tcpretrans",
        [
            {
                **base,
                "kind": "reset_received",
                "segs": 0,
                "state": "ESTABLISHED",
                "saddr": "10.0.0.1",
                "sport": 5000,
                "daddr": "10.0.0.2",
                "dport": 80,
            }
        ],
    )
    [conn] = view.failing()
    assert (conn.retransmits, conn.resets_received, dict(conn.drops)) == (
        3,
        1,
        {"NETFILTER_DROP": 1},
    )
    assert (conn.pid, conn.comm) == (7, "curl")


def test_every_shipped_probe_has_a_decoder_for_each_label():
    env = fake_env()
    decoders = Decoders(env)
    for m in default().manifests.values():
        for metric in m.metrics:
            for label in metric.labels:
                # a kernel source's labels come as text: no decoder
                assert decoders.get(label.decoder) if not metric.source else not label.decoder


def test_what_a_probe_adds_to_its_flags_is_in_its_load_request():
    """The exporter compiles load_request()s (CompilerLoader.load_many), not
    attach(): a subclass's own flags must be there."""
    from pyprobe.probes.tcpstates import Filters

    probe = default().create("tcpstates", env=fake_env(), loader=FakeLoader())
    probe.filters = Filters(pid=42, lports=(80,))
    request = probe.load_request()
    hook, flags = request.hook, request.cflags
    assert "-DFILTER_PID=42" in flags and "-DLPORT_MATCH(p)=((p)==80)" in flags
    assert hook.kind == "tp_btf"
