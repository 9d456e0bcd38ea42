"""`pip install .` (not editable) works: the wheel carries bpf/ and probes/ and
the installed command loads its program from site-packages; it carries what
an install hands to Grafana, Prometheus and systemd, found through
pyprobe.paths."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

PATHS = """
from pyprobe import paths
for path in (paths.dashboards_dir() / "pyprobe-overview.json", paths.rules_file(),
             paths.systemd_unit(), paths.bpf_dir()):
    print(path)
"""

NATIVE = """
from pyprobe.core import native
from pyprobe.core.events import header
from pyprobe.kernel.env import KernelEnv
from pyprobe.probes import default
layout, outputs = default().create("tcpstates", env=KernelEnv.detect())._event
print("built" if native.library(outputs, layout, header()) else "none")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", "-w", str(out), str(REPO)], check=True, capture_output=True)
    return next(out.glob("pyprobe-*.whl"))


def test_wheel_carries_what_an_install_needs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    data = {
        *(f"bpf/{p.name}" for p in (REPO / "bpf").iterdir()),
        *(f"probes/{p.name}" for p in (REPO / "probes").glob("*.toml")),
        "dashboards/pyprobe-overview.json",
        "dashboards/provisioning/dashboards/pyprobe.yml",
        "dashboards/provisioning/datasources/pyprobe.yml",
        "dashboards/rules/pyprobe.rules.yml",
        "dashboards/rules/config.yml",  # pyprobe rules' default config
        "contrib/systemd/pyprobe-exporter.service",
    }
    assert {f"pyprobe/_data/{d}" for d in data} <= names
    # The stream's C formatter is built from these at first use.
    runtime = {
        f"pyprobe/core/native_c/{p.name}" for p in (REPO / "pyprobe/core/native_c").glob("*.h")
    }
    assert runtime and runtime <= names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # The dashboard's generator and its README are the checkout's, not an install's.
    assert not {n for n in names if n.endswith(("build.py", "README.md"))}


def test_wheel_installs_and_runs(tmp_path, wheel):
    venv = tmp_path / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", venv], check=True)
    pip = [venv / "bin/python", "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    # Dependencies come from the project's venv (already satisfied there), so
    # this installs only pyprobe itself, from a wheel built in isolation.
    site = subprocess.run(
        [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    own = subprocess.run(
        [venv / "bin/python", "-c", "import site; print(site.getsitepackages()[0])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (Path(own) / "deps.pth").write_text(site + "\n")
    subprocess.run([*pip, "--no-deps", str(wheel)], check=True, capture_output=True)
    where = subprocess.run(
        [venv / "bin/python", "-c", "from pyprobe.paths import bpf_dir; print(bpf_dir())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith("pyprobe/_data/bpf")
    assert (Path(where) / "tcpstates.bpf.c").is_file()
    found = subprocess.run(
        [venv / "bin/python", "-c", PATHS],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.split()
    for path in found:
        assert path.startswith(f"{venv}/") and "/pyprobe/_data/" in path, path
        assert Path(path).exists(), path
    run = subprocess.run(
        [venv / "bin/pyprobe", "tcpstates", "--summary", "-j", "0.2", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    assert "transitions" in json.loads(run.stdout)
    # The stream's C formatter ships as source in the wheel and builds there.
    native = subprocess.run(
        [venv / "bin/python", "-c", NATIVE],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert native.returncode == 0 and native.stdout.strip() == "built", native.stderr
