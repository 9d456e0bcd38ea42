"""Kernel headers from the host's root (--path.rootfs), for a pyprobe whose
own /lib/modules has none (a container with the host's / mounted at /host).

bcc compiles with /lib/modules/RELEASE/{build,source} of its own mount
namespace, or with the one tree BCC_KERNEL_SOURCE names. Debian and Ubuntu
split the headers in two (build: generated headers and config; source: the
rest), so the host's pair is joined here into one tree of symbolic links
(build first), in a temporary directory that lives as long as the process.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from pathlib import Path

from .host import HostPaths

BCC_KERNEL_SOURCE = "BCC_KERNEL_SOURCE"


def host_build(paths: HostPaths, release: str) -> Path | None:
    """The host's /lib/modules/RELEASE/build under rootfs, its links followed
    as the host follows them; None when it has no headers there."""
    try:
        build = paths.resolve(f"/lib/modules/{release}/build")
        return build if (build / "include").is_dir() else None
    except OSError:
        return None


@functools.cache
def bcc_tree(paths: HostPaths, release: str) -> Path:
    """One tree with the host's build and source headers (what bcc's
    BCC_KERNEL_SOURCE takes), made once per process."""
    build = host_build(paths, release)
    if build is None:
        raise FileNotFoundError(paths.modules(release) / "build")
    layers = [build]
    try:
        source = paths.resolve(f"/lib/modules/{release}/source")
        if source.is_dir() and source != build:
            layers.append(source)
    except OSError:
        pass
    if len(layers) == 1:
        return build  # one tree already (Fedora's, a kernel's own `make`)
    into = Path(tempfile.mkdtemp(prefix=f"pyprobe-headers-{release}-"))
    atexit.register(shutil.rmtree, into, ignore_errors=True)
    _join(into, layers, paths.rootfs)
    return into


def _join(into: Path, layers: list[Path], rootfs: Path) -> None:
    """into/NAME -> the first layer's NAME; a directory more than one layer
    has is made here and joined in turn."""
    found: dict[str, list[Path]] = {}
    for layer in layers:
        try:
            names = sorted(os.listdir(layer))
        except OSError:
            continue
        for name in names:
            found.setdefault(name, []).append(layer / name)
    for name, where in found.items():
        dirs = [p for p in where if _is_dir(p)]
        if len(dirs) > 1:
            (into / name).mkdir()
            _join(into / name, dirs, rootfs)
            continue
        target = where[0]
        link = _readlink(target)
        if link is not None and link.startswith("/"):
            target = rootfs / link.lstrip("/")  # the host's absolute link
        (into / name).symlink_to(target)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _readlink(path: Path) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None
