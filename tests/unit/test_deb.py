"""`make deb`'s package, built into a temporary directory and inspected with
dpkg-deb (never installed: that would change the machine the suite runs on):
its files, Depends and conffiles; its /usr/bin/pyprobe run from the
extracted tree; the unit it installs against the command and config it
installs."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyprobe.core.manifest import tomllib  # tomli on Python 3.10
from pyprobe.exporter import webconfig
from pyprobe.load import cache

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "contrib/debian/build.py"
META = tomllib.loads((REPO / "pyproject.toml").read_text())
VERSION = META["project"]["version"]
SITE = "usr/lib/python3/dist-packages"
UNIT = "lib/systemd/system/pyprobe-exporter.service"

# pyproject's dependencies and the Debian packages that provide them.
DEBIAN_NAMES = {
    "click": "python3-click",
    "rich": "python3-rich",
    "pyroute2": "python3-pyroute2",
    "prometheus-client": "python3-prometheus-client",
    "PyYAML": "python3-yaml",
    "bcrypt": "python3-bcrypt",
}

pytestmark = pytest.mark.skipif(
    shutil.which("dpkg-deb") is None, reason="dpkg-deb missing (Debian's dpkg)"
)


MAN = {}  # the manual pages `make man` writes, made once for the module


def build(out: Path) -> Path:
    if "dir" not in MAN:
        MAN["dir"] = out.parent / "man"
        make_man = f"from pyprobe.cli import main; main(['man', {str(MAN['dir'])!r}])"
        subprocess.run([sys.executable, "-c", make_man], check=True, capture_output=True)
    run = subprocess.run(
        [sys.executable, BUILD, "--out", out, "--man", MAN["dir"]],
        capture_output=True,
        text=True,
        check=True,
    )
    deb = Path(run.stdout.strip())
    assert deb == out / f"pyprobe_{VERSION}_all.deb"
    return deb


@pytest.fixture(scope="module")
def deb(tmp_path_factory) -> Path:
    return build(tmp_path_factory.mktemp("deb"))


@pytest.fixture(scope="module")
def tree(deb, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    subprocess.run(["dpkg-deb", "-e", deb, root / "DEBIAN"], check=True)
    return root


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "-f", deb, name], capture_output=True, text=True, check=True
    ).stdout.strip()


def listing(deb: Path) -> dict[str, tuple[str, str]]:
    """path -> (mode, owner) for every entry of the data archive."""
    out = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True)
    entries = {}
    for line in out.stdout.splitlines():
        mode, owner, _size, _date, _time, name = line.split(None, 5)
        entries[name.split(" -> ")[0].removeprefix("./").rstrip("/")] = (mode, owner)
    return entries


def test_control_fields_and_depends(deb):
    assert field(deb, "Package") == "pyprobe"
    assert field(deb, "Version") == VERSION
    assert field(deb, "Architecture") == "all"
    depends = {d.split()[0]: d for d in field(deb, "Depends").split(", ")}
    # bcc only ever from Debian's python3-bpfcc (PyPI's "bcc" is another project).
    assert "python3-bpfcc" in depends
    assert depends["python3"] == "python3 (>= 3.11)"  # tomllib; Debian 12's is 3.11
    for requirement in META["project"]["dependencies"]:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        if "python_version < '3.11'" in requirement:
            continue  # tomli: in the standard library from 3.11
        assert DEBIAN_NAMES.get(name) in depends, f"{requirement}: no Debian package in Depends"
    assert int(field(deb, "Installed-Size")) > 100


def test_files_where_debian_looks(deb):
    files = listing(deb)
    assert {owner for _mode, owner in files.values()} == {"root/root"}
    assert files["usr/bin/pyprobe"][0] == "-rwxr-xr-x"
    for path in (
        UNIT,
        "etc/pyprobe/web.yml",
        "usr/share/pyprobe/dashboards/pyprobe-overview.json",
        "usr/share/pyprobe/dashboards/provisioning/dashboards/pyprobe.yml",
        "usr/share/pyprobe/dashboards/provisioning/datasources/pyprobe.yml",
        "usr/share/pyprobe/dashboards/rules/pyprobe.rules.yml",
        "usr/share/doc/pyprobe/copyright",
        "usr/share/doc/pyprobe/changelog.gz",
        "usr/share/doc/pyprobe/exporter.md.gz",
        "usr/share/doc/pyprobe/runbooks.md.gz",
        "usr/share/man/man1/pyprobe.1.gz",
        "usr/share/man/man1/pyprobe-drops.1.gz",
        "usr/share/man/man1/pyprobe-lab-up.1.gz",
        f"{SITE}/pyprobe-{VERSION}.dist-info/METADATA",
    ):
        assert files.get(path, ("",))[0].startswith("-rw-r--r--"), path
    # The whole package, its C formatter's header and the programs and manifests.
    for source in (
        *(REPO / "pyprobe").rglob("*.py"),
        *(REPO / "pyprobe/core/native_c").glob("*.h"),
    ):
        assert f"{SITE}/{source.relative_to(REPO)}" in files, source
    for source in (*(REPO / "bpf").iterdir(), *(REPO / "probes").glob("*.toml")):
        assert f"{SITE}/pyprobe/_data/{source.relative_to(REPO)}" in files, source
    # Byte-compiled at install (py3compile), never shipped; no checkout leftovers.
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert not [f for f in files if f.endswith(("build.py", "README.md"))]


def test_conffiles_and_maintainer_scripts(tree):
    assert (tree / "DEBIAN/conffiles").read_text() == "/etc/pyprobe/web.yml\n"
    for script in ("postinst", "prerm", "postrm"):
        path = tree / "DEBIAN" / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["sh", "-n", path], check=True)
    # The directory the program cache lives in, made 0700 and purged.
    home = str(cache.DEFAULT_DIR.parent)
    assert f"CACHE={home}\n" in (tree / "DEBIAN/postinst").read_text()
    assert f"rm -rf {home}\n" in (tree / "DEBIAN/postrm").read_text()
    # The web config as shipped is valid and changes nothing: plain HTTP.
    shipped = webconfig.load(tree / "etc/pyprobe/web.yml")
    assert shipped.tls is None and not shipped.users


def test_the_unit_runs_what_the_package_installs(tree):
    unit = (tree / UNIT).read_text()
    start = shlex.split(re.search(r"^ExecStart=(.+)$", unit, re.M).group(1))
    assert start[0] == "/usr/bin/pyprobe" and (tree / start[0].lstrip("/")).is_file()
    assert start[1] == "export"
    config = next(a.split("=", 1)[1] for a in start if a.startswith("--web.config.file="))
    assert f"{config}\n" == (tree / "DEBIAN/conffiles").read_text()
    # The cache directory systemd makes for the unit is the program cache's.
    assert f"CacheDirectory={cache.DEFAULT_DIR.parent.name}\n" in unit
    options = set(re.findall(r"(--[\w.-]+)", packaged(tree, "export", "--help").stdout))
    for arg in start[2:]:
        assert arg.split("=", 1)[0] in options, arg


def packaged(tree: Path, *argv: str) -> subprocess.CompletedProcess:
    """The package's /usr/bin/pyprobe from the extracted tree, its modules
    first on the path (this interpreter supplies the dependencies)."""
    env = {**os.environ, "PYTHONPATH": str(tree / SITE)}
    return subprocess.run(
        [sys.executable, tree / "usr/bin/pyprobe", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=True,
    )


def test_packaged_command_runs_from_the_tree(tree):
    command = (tree / "usr/bin/pyprobe").read_text()
    assert command.startswith("#!/usr/bin/python3\n")  # Debian's python3, never a venv's
    out = packaged(tree, "--help").stdout
    assert out.startswith("Usage: pyprobe")
    assert {"export", "tcpstates", "doctor", "compile"} <= set(re.findall(r"^  (\w+)", out, re.M))
    assert packaged(tree, "--version").stdout == f"pyprobe, version {VERSION}\n"
    probe = (
        "import importlib.metadata as m, pyprobe; from pyprobe import paths;"
        "print(pyprobe.__file__, m.version('pyprobe'), paths.bpf_dir(),"
        " paths.dashboards_dir(), paths.rules_file(), sep='\\n')"
    )
    env = {**os.environ, "PYTHONPATH": str(tree / SITE)}
    lines = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=tree, check=True
    ).stdout.split()
    assert lines[0] == f"{tree}/{SITE}/pyprobe/__init__.py"
    assert lines[1] == VERSION
    assert lines[2] == f"{tree}/{SITE}/pyprobe/_data/bpf"
    # Through the package's links: the files where Debian puts them.
    assert lines[3] == f"{tree}/usr/share/pyprobe/dashboards"
    assert lines[4] == f"{tree}/usr/share/pyprobe/dashboards/rules/pyprobe.rules.yml"
    link = tree / SITE / "pyprobe/_data/contrib/systemd/pyprobe-exporter.service"
    assert os.readlink(link) == f"/{UNIT}"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing")
def test_the_unit_passes_systemd_analyze_verify(tree, tmp_path):
    """Every directive known and well-formed (systemd warns and carries on:
    any output is a failure). The command is swapped for one that exists
    here; the test above checks the package has the real one."""
    unit = (
        (tree / UNIT).read_text().replace("/usr/bin/pyprobe", shutil.which("true") or "/bin/true")
    )
    (tmp_path / "pyprobe-exporter.service").write_text(unit)
    run = subprocess.run(
        ["systemd-analyze", "verify", tmp_path / "pyprobe-exporter.service"],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0 and not (run.stdout + run.stderr).strip(), run.stdout + run.stderr


def test_the_same_checkout_builds_the_same_bytes(deb, tmp_path):
    assert build(tmp_path).read_bytes() == deb.read_bytes()
