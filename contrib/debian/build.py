"""Build pyprobe_<version>_all.deb from this checkout with dpkg-deb
(`make deb`): no network, no debhelper, nothing but this tree and the
standard library.

The package holds what the wheel holds, laid out as Debian lays out a
Python 3 package: the package in /usr/lib/python3/dist-packages with its
package data (pyproject's force-include table, the wheel's own list), a
/usr/bin/pyprobe that runs it with Debian's python3. What an install hands
to other programs goes where they look: the unit in /lib/systemd/system,
the dashboards and rules in /usr/share/pyprobe; links from the package data
lead there, so pyprobe.paths names those places. The web config the unit
reads is a conffile in /etc/pyprobe. The manual pages `make man` wrote
(build/man: made from the command tree by `pyprobe man`, which needs
pyprobe's dependencies, so not here) go to /usr/share/man/man1, gzipped;
without them the package has none. No .pyc: postinst byte-compiles
(py3compile), prerm cleans up (py3clean), as dh_python3's scripts do.

    python3 contrib/debian/build.py [--out DIR] [--man DIR]
        (default: dist/, and build/man/ where `make man` wrote it)
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from email.utils import parsedate_to_datetime
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

DIST = Path("usr/lib/python3/dist-packages")
DOC = Path("usr/share/doc/pyprobe")
# The checkout's directories that an install hands to other programs, and
# where the package puts them instead of the package data.
SHARE = Path("usr/share/pyprobe")
UNITS = Path("lib/systemd/system")
MAN = Path("usr/share/man/man1")
CONFFILES = {Path("etc/pyprobe/web.yml"): HERE / "web.yml"}

ENTRY = """#!/usr/bin/python3
import sys

from pyprobe.cli import run

sys.exit(run())
"""


class Refused(Exception):
    """What stops the build, said in one line."""


def project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def changelog_version(text: str) -> tuple[str, int]:
    """The top entry's version, and its date as a timestamp (every file's
    mtime: the same tree builds the same bytes)."""
    head = re.match(r"pyprobe \(([^)]+)\)", text)
    date = re.search(r"^ -- .+?  (.+)$", text, re.M)
    if not head or not date:
        raise Refused("contrib/debian/changelog: no top entry 'pyprobe (VERSION)' with a trailer")
    return head.group(1), int(parsedate_to_datetime(date.group(1)).timestamp())


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _files(top: Path) -> list[Path]:
    """The files under top (or top itself), without byte-compiled leftovers."""
    if top.is_file():
        return [top]
    return sorted(
        p
        for p in top.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


def _link(link: Path, target: Path, root: Path) -> None:
    """A symlink in the package: relative within /usr, absolute across
    top-level directories (Debian policy 10.5)."""
    link.parent.mkdir(parents=True, exist_ok=True)
    rel_link = link.relative_to(root)
    if rel_link.parts[0] == target.parts[0]:
        os.symlink(os.path.relpath(root / target, link.parent), link)
    else:
        os.symlink("/" + str(target), link)


def stage_python(root: Path, meta: dict) -> None:
    """The package, its package data, its metadata and /usr/bin/pyprobe."""
    site = root / DIST
    for package in meta["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]:
        for f in _files(REPO / package):
            _copy(f, site / f.relative_to(REPO))
    force = meta["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    dashboards = False
    for source, target in force.items():
        for f in _files(REPO / source):
            rel = f.relative_to(REPO)  # the checkout's path: dashboards/rules/...
            data = site / target / f.relative_to(REPO / source)  # where the wheel has it
            if rel.parts[0] == "dashboards":
                _copy(f, root / SHARE / rel)
                dashboards = True
            elif rel.parts[:2] == ("contrib", "systemd"):
                _copy(f, root / UNITS / f.name)
                _link(data, UNITS / f.name, root)
            else:
                _copy(f, data)
    if dashboards:
        # One link for the directory, so paths.dashboards_dir() is /usr/share's.
        _link(site / "pyprobe/_data/dashboards", SHARE / "dashboards", root)

    info = meta["project"]
    dist_info = site / f"{info['name']}-{info['version']}.dist-info"
    dist_info.mkdir(parents=True)
    # No Requires-Dist: Debian's Depends say what is needed, at versions
    # checked against pyprobe (docs/deploy.md), some older than pyproject's floors.
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\n"
        f"Name: {info['name']}\n"
        f"Version: {info['version']}\n"
        f"Summary: {info['description']}\n"
        f"License-Expression: {info['license']}\n"
        f"Requires-Python: {info['requires-python']}\n"
    )
    scripts = "".join(f"{k} = {v}\n" for k, v in info["scripts"].items())
    (dist_info / "entry_points.txt").write_text(f"[console_scripts]\n{scripts}")
    (dist_info / "top_level.txt").write_text("pyprobe\n")
    # No RECORD: pip refuses to uninstall (or upgrade over) dpkg's files.
    (dist_info / "INSTALLER").write_text("dpkg\n")

    command = root / "usr/bin/pyprobe"
    command.parent.mkdir(parents=True)
    command.write_text(ENTRY)


def _gzip(src: bytes, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    # mtime 0 and no name, as gzip -9n: the same input, the same bytes.
    with open(dst, "wb") as raw, gzip.GzipFile("", "wb", 9, raw, mtime=0) as out:
        out.write(src)


def stage_rest(root: Path) -> None:
    for installed, source in CONFFILES.items():
        _copy(source, root / installed)
    _copy(HERE / "copyright", root / DOC / "copyright")
    _gzip((HERE / "changelog").read_bytes(), root / DOC / "changelog.gz")
    _gzip((REPO / "README.md").read_bytes(), root / DOC / "README.md.gz")
    for page in sorted((REPO / "docs").glob("*.md")):  # what README's quick start links to
        _gzip(page.read_bytes(), root / DOC / f"{page.name}.gz")


def stage_man(root: Path, pages: Path | None) -> None:
    """pages/*.1 as Debian keeps manual pages: gzipped, in man1."""
    if pages is None or not pages.is_dir():
        return
    for page in sorted(pages.glob("*.1")):
        _gzip(page.read_bytes(), root / MAN / f"{page.name}.gz")


def stage_control(root: Path, version: str) -> None:
    control = root / "DEBIAN"
    control.mkdir()
    sums = []
    size = 0
    conffiles = {f"/{p}" for p in CONFFILES}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if rel.parts[0] == "DEBIAN":
            continue
        # Installed-Size in KiB, as dpkg-gencontrol counts: each file
        # rounded up, one for each directory or link.
        if p.is_file() and not p.is_symlink():
            size += -(-p.stat().st_size // 1024)
            if f"/{rel}" not in conffiles:  # dpkg checks conffiles its own way
                sums.append(f"{hashlib.md5(p.read_bytes()).hexdigest()}  {rel}\n")
        else:
            size += 1
    text = (HERE / "control").read_text()
    text = text.replace("@VERSION@", version).replace("@INSTALLED_SIZE@", str(size))
    (control / "control").write_text(text)
    (control / "md5sums").write_text("".join(sums))
    (control / "conffiles").write_text("".join(f"{c}\n" for c in sorted(conffiles)))
    for script in ("postinst", "prerm", "postrm"):
        shutil.copyfile(HERE / script, control / script)


EXECUTABLE = {"usr/bin/pyprobe", "DEBIAN/postinst", "DEBIAN/prerm", "DEBIAN/postrm"}


def normalize(root: Path, mtime: int) -> None:
    """Modes as Debian expects them, whatever the umask and the checkout's
    modes; one mtime for every file."""
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            executable = p.is_dir() or str(p.relative_to(root)) in EXECUTABLE
            p.chmod(0o755 if executable else 0o644)
        os.utime(p, (mtime, mtime), follow_symlinks=False)


def build(out: Path, man: Path | None = None) -> Path:
    meta = project()
    version, mtime = changelog_version((HERE / "changelog").read_text())
    if version != meta["project"]["version"]:
        raise Refused(
            f"contrib/debian/changelog is at {version}, pyproject.toml at "
            f"{meta['project']['version']}: add a changelog entry"
        )
    if shutil.which("dpkg-deb") is None:
        raise Refused("dpkg-deb not found (Debian's dpkg package)")
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"pyprobe_{version}_all.deb"
    with tempfile.TemporaryDirectory(prefix="pyprobe-deb-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        stage_python(root, meta)
        stage_rest(root)
        stage_man(root, man)
        stage_control(root, version)
        normalize(root, mtime)
        env = {**os.environ, "SOURCE_DATE_EPOCH": str(mtime)}
        run = subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", str(root), str(deb)],
            capture_output=True,
            text=True,
            env=env,
        )
        if run.returncode != 0:
            raise Refused(f"dpkg-deb: {run.stderr.strip() or run.stdout.strip()}")
    return deb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="default: dist/")
    parser.add_argument(
        "--man", type=Path, default=REPO / "build/man", help="manual pages (default: build/man/)"
    )
    args = parser.parse_args()
    try:
        deb = build(args.out, args.man)
    except Refused as e:
        print(f"make deb: {e}", file=sys.stderr)
        sys.exit(2)
    print(deb)


if __name__ == "__main__":
    main()
