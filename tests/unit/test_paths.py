"""pyprobe.paths finds an install's files in the checkout, and the wheel's
package data is laid out the way it looks for them there (_data/X for X)."""

from pathlib import Path

from pyprobe import paths
from pyprobe.core.manifest import tomllib  # tomli on Python 3.10

REPO = Path(__file__).resolve().parents[2]


def test_each_file_is_found_in_the_checkout():
    assert paths.bpf_dir() == REPO / "bpf"
    assert paths.probes_dir() == REPO / "probes"
    assert (paths.dashboards_dir() / "pyprobe-overview.json").is_file()
    assert (paths.dashboards_dir() / "provisioning/dashboards/pyprobe.yml").is_file()
    assert paths.rules_file() == REPO / "dashboards/rules/pyprobe.rules.yml"
    assert paths.rules_file().is_file()
    assert paths.systemd_unit() == REPO / "contrib/systemd/pyprobe-exporter.service"
    assert paths.systemd_unit().is_file()


def test_the_wheel_mirrors_the_checkout_under_data():
    table = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["hatch"]["build"]
    force = table["targets"]["wheel"]["force-include"]
    for source, target in force.items():
        assert (REPO / source).exists(), source
        # paths.data_dir looks for the checkout's X at pyprobe/_data/X.
        assert target == f"pyprobe/_data/{source}", (source, target)
    shipped = {Path(s) for s in force}
    for needed in (paths.bpf_dir(), paths.probes_dir(), paths.rules_file(), paths.systemd_unit()):
        rel = needed.relative_to(REPO)
        assert any(rel == s or s in rel.parents for s in shipped), f"{rel} is not in the wheel"
