"""The dashboard's variables: namespaces by name, and cgroup/pod where a
probe's series carry those labels (their matchers on those panels only)."""

from pyprobe.probes import default
from pyprobe.views.dashboard import build, rows


def test_netns_variable_lists_names_and_panels_select_by_name():
    dash = build(default())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["netns"]["query"]["query"].endswith(", netns_name)")
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    assert any('netns_name=~"$netns"' in e for e in exprs)
    assert not any('netns=~"$netns"' in e for e in exprs)


def test_cgroup_and_pod_variables_apply_to_the_probes_that_carry_them():
    registry = default()
    dash = build(registry)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for label in ("cgroup", "pod"):
        assert variables[label]["query"]["query"].endswith(f", {label})")
        assert variables[label]["allValue"] == ".*"  # series without the label still match
    carriers = {
        registry.manifests[n].dashboard.title if registry.manifests[n].dashboard else n
        for n in registry.names()
        if any(lb.name == "pod" for m in registry.manifests[n].metrics for lb in m.labels)
    }
    assert "Drops" in carriers
    for title, _panels, extra in rows(registry):
        assert (extra == ("cgroup", "pod")) == (title in carriers), title
    by_row, current = {}, None
    for panel in dash["panels"]:
        if panel["type"] == "row":
            current = panel["title"]
            continue
        for target in panel["targets"]:
            if "$instance" in target["expr"]:
                by_row.setdefault(current, set()).add('pod=~"$pod"' in target["expr"])
    assert by_row["Drops"] == {True}
    assert by_row["Exporter health"] == {False}
