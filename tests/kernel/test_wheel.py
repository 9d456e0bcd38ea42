"""`pip install .` (not editable) works: the wheel carries bpf/ and probes/ and
the installed command loads its program from site-packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]

NATIVE = """
from pyprobe.core import native
from pyprobe.core.events import header
from pyprobe.kernel.env import KernelEnv
from pyprobe.probes import default
layout, outputs = default().create("tcpstates", env=KernelEnv.detect())._event
print("built" if native.library(outputs, layout, header()) else "none")
"""


def test_wheel_installs_and_runs(tmp_path):
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
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True, capture_output=True)
    where = subprocess.run(
        [venv / "bin/python", "-c", "from pyprobe.paths import bpf_dir; print(bpf_dir())"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert where.startswith(str(venv)) and where.endswith("pyprobe/_data/bpf")
    assert (Path(where) / "tcpstates.bpf.c").is_file()
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
