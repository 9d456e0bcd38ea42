"""A new counting probe is its two files: a copy of an existing pair under a
new name, in a scratch tree, gets its command, its `top` panels, its
metrics on the exporter, its `list`/`doctor` line and its dashboard row,
with no other file touched."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from pyprobe import cli
from pyprobe.cli.common import Context
from pyprobe.exporter.caps import LabelCaps
from pyprobe.exporter.collectors import ProbeCollector, ProbeState
from pyprobe.load.bcc import BccLoader
from pyprobe.paths import bpf_dir, probes_dir
from pyprobe.probes import Registry
from pyprobe.views.dashboard import build
from pyprobe.views.top import TopView

pytestmark = [pytest.mark.root, pytest.mark.kernel]

SOURCE, COPY = "softirqs", "softirqs_copy"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Registry:
    """Every probe of the install, plus SOURCE's pair copied as COPY: its
    name, and its metric names (a metric is the exporter's, once), changed
    in the copy alone."""
    root = tmp_path_factory.mktemp("tree")
    shutil.copytree(probes_dir(), root / "probes")
    shutil.copytree(bpf_dir(), root / "bpf")
    shutil.copy(root / "bpf" / f"{SOURCE}.bpf.c", root / "bpf" / f"{COPY}.bpf.c")
    text = (root / "probes" / f"{SOURCE}.toml").read_text()
    names = re.findall(r'\[\[metrics\]\]\nname = "(\w+)"', text)
    text = text.replace(f'name = "{SOURCE}"', f'name = "{COPY}"', 1)
    for name in sorted(names, key=len, reverse=True):
        text = text.replace(f'"{name}"', f'"copy_{name}"').replace(
            f"pyprobe_{name}", f"pyprobe_copy_{name}"
        )
    text = text.replace('title = "softirqs"', 'title = "softirqs, the copy"')
    (root / "probes" / f"{COPY}.toml").write_text(text)
    return Registry(root / "probes", root / "bpf")


def run(capsys, registry: Registry, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv), context=Context(registry=registry))
        raise SystemExit(0)
    out = capsys.readouterr()
    return int(e.value.code or 0), out.out, out.err


def test_its_command_counts_what_the_kernel_counts(scratch, capsys):
    code, out, _ = run(capsys, scratch, COPY, "--help")
    assert code == 0 and "[INTERVAL [COUNT]]" in out and "-j, --json" in out
    assert "-F, --feature [time|raises|all]" in out
    # its default: what the kernel counts (/proc/softirqs); a feature: its hooks
    code, out, err = run(capsys, scratch, COPY, "-j", "-F", "time", "0.3", "1")
    assert code == 0, err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["probe"] == COPY and record["hook"].startswith("raw_tracepoint:softirq_entry")
    runs = [r for r in record["rows"] if r["metric"] == "copy_softirqs_total"]
    assert any(r["vector"] == "TIMER" and r["value"] > 0 for r in runs)
    took = [r for r in record["rows"] if r["metric"] == "copy_softirq_seconds_total"]
    assert took and all(r["value"] > 0 for r in took)


def test_its_line_in_list_and_doctor(scratch, capsys):
    code, out, _ = run(capsys, scratch, "list")
    assert code == 0 and re.search(rf"^{COPY}\s+kernel counters", out, re.M)
    code, out, _ = run(capsys, scratch, "doctor")
    assert code == 0 and f"  {COPY}: uses kernel counters" in out
    assert f"    feature {COPY}.time (off): " in out


def test_its_metrics_on_the_exporter_and_its_panels_in_top(scratch, env, no_programs_left):
    probe = scratch.create(COPY, env, BccLoader(), ["time"])
    with probe:
        probe.attach()
        time.sleep(0.2)
        state = ProbeState(COPY, probe, loading=False)
        families = {f.name: f for f in ProbeCollector(state, LabelCaps({})).collect()}
        assert state.last.success
        runs = families["pyprobe_copy_softirqs"]  # prometheus_client names counters so
        assert sum(s.value for s in runs.samples if s.name.endswith("_total")) > 0
        assert "pyprobe_copy_softirq_run_seconds" in families
        view = TopView({COPY: probe})
        assert [p.metric for p in view.panels] == [
            "copy_softirqs_total",
            "copy_softirq_cpu_seconds_total",
            "copy_softirq_seconds_total",  # its feature time's
        ]
        view.frame()


def test_its_row_on_the_dashboard(scratch):
    dashboard = build(scratch)
    rows = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
    assert "softirqs, the copy" in rows and "softirqs" in rows
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", ())]
    assert any("pyprobe_copy_softirqs_total" in e for e in exprs)
    assert not any("$SEL" in e or "$RATE" in e for e in exprs)  # the selectors filled in


def test_a_probe_without_a_dashboard_or_top_table_gets_generated_ones(scratch, tmp_path):
    """The manifest's [dashboard] and `top` tables are optional: without
    them each metric has a panel made from its type and labels."""
    root = tmp_path
    shutil.copytree(Path(scratch.bpf_dir), root / "bpf")
    (root / "probes").mkdir()
    text = (Path(scratch.probes_dir) / f"{COPY}.toml").read_text()
    text = text[: text.index("\n[dashboard]")]
    text = re.sub(r"^top = .*\n", "", text, flags=re.M)
    (root / "probes" / f"{COPY}.toml").write_text(text)
    bare = Registry(root / "probes", root / "bpf")
    dashboard = build(bare)
    titles = [p["title"] for p in dashboard["panels"] if p["type"] == "timeseries"]
    assert "copy_softirqs_total /s" in titles and "copy_softirq_run_seconds p99" in titles
    top = [m.top.title for m in bare.manifest(COPY).metrics if m.top is not None]
    assert top == [
        "copy_softirqs_total",
        "copy_softirq_cpu_seconds_total",
        "copy_softirqs_raised_total",
        "copy_softirq_seconds_total",
    ]
