"""Where the host's /proc, /sys and / are: --path.procfs, --path.sysfs and
--path.rootfs (node_exporter's names and defaults), for pyprobe running in
a container with the host's trees mounted elsewhere (/host/proc, ...).

Every read of the *host's* files goes through the HostPaths in use: the
kernel's counters (/proc/softirqs, stat, net/softnet_stat), /proc/kallsyms,
every process's ns/net and fd (namespaces, socket owners), BTF, tracefs, the
cgroup v2 tree, /run/netns, the kubelet's pod directories. What is the
*process's own* stays its own: /proc/self/status (its capabilities),
/proc/thread-self/ns/net (the namespace a thread has entered), its mount
table. bcc, in the compiler process, reads its own mount namespace's
/proc/kallsyms and /sys/kernel/tracing whatever is set here, and its
/lib/modules unless it is given the host's headers (kernel/headers.py).

The paths in use are the process's (one per process: the caches of kernel
symbols and namespaces are too); the CLI installs them once, from its
Context, before any command runs (`use`), and only this module holds them.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import PyprobeError

# The initial namespaces' inode numbers are fixed (include/linux/proc_ns.h):
# a process whose pid or user namespace has another one is in a container.
PID_INIT_INO = 0xEFFFFFFC
USER_INIT_INO = 0xEFFFFFFD
CGROUP_INIT_INO = 0xEFFFFFFB


@dataclass(frozen=True)
class HostPaths:
    procfs: Path = Path("/proc")
    sysfs: Path = Path("/sys")
    rootfs: Path = Path("/")

    # -- where each thing is ------------------------------------------------------
    def proc(self, *parts: str) -> Path:
        return self.procfs.joinpath(*parts)

    def sys(self, *parts: str) -> Path:
        return self.sysfs.joinpath(*parts)

    def root(self, path: str | Path) -> Path:
        """The host's absolute `path` as this process sees it (under rootfs)."""
        return self.rootfs / Path(path).relative_to("/")

    @property
    def netns_dir(self) -> Path:
        """Named network namespaces (`ip netns add`)."""
        return self.root("/run/netns")

    @property
    def kubelet_pods(self) -> Path:
        return self.root("/var/lib/kubelet/pods")

    @property
    def btf(self) -> Path:
        return self.sys("kernel", "btf", "vmlinux")

    @property
    def tracefs_candidates(self) -> tuple[Path, Path]:
        return (self.sys("kernel", "tracing"), self.sys("kernel", "debug", "tracing"))

    @property
    def bpffs(self) -> Path:
        return self.sys("fs", "bpf")

    def cgroup2(self) -> Path | None:
        """The host's cgroup v2 root: sysfs/fs/cgroup (unified), or beside the
        v1 hierarchies (hybrid: sysfs/fs/cgroup/unified); None when neither
        is one (only a v2 root has cgroup.controllers)."""
        for candidate in (self.sys("fs", "cgroup"), self.sys("fs", "cgroup", "unified")):
            if _exists(candidate / "cgroup.controllers"):
                return candidate
        return None

    def modules(self, release: str) -> Path:
        """The host's /lib/modules/RELEASE."""
        return self.root(f"/lib/modules/{release}")

    def resolve(self, path: str | Path) -> Path:
        """The host's absolute `path` under rootfs, its symbolic links
        followed as the host follows them (an absolute link target is the
        host's: /lib/modules/R/build -> /usr/src/... lies under rootfs too)."""
        return _resolve_under(self.rootfs, Path(path))

    @property
    def is_default(self) -> bool:
        return self == HostPaths()

    def describe(self) -> str:
        return f"procfs {self.procfs}, sysfs {self.sysfs}, rootfs {self.rootfs}"

    # -- the flags ------------------------------------------------------------------
    def with_flag(self, flag: str, value: str) -> HostPaths:
        """A copy with --path.procfs/--path.sysfs/--path.rootfs set to value,
        checked: a path that is not what the flag names is a one-line error."""
        return replace(self, **{flag.removeprefix("--path."): check(flag, value)})


# What each flag's directory must hold: a file every procfs has, a directory
# every sysfs has; a root need only be a directory (it may hold only what was
# mounted into it, /run/netns say).
MARKS = {"--path.procfs": ("procfs", "stat"), "--path.sysfs": ("sysfs", "kernel")}


def check(flag: str, value: str) -> Path:
    """The flag's path, absolute, or a PyprobeError saying why it is not one."""
    if not value:
        raise PyprobeError(f"{flag}: an empty path")
    path = Path(value).absolute()
    if flag not in MARKS:
        if not _is_dir(path):
            raise PyprobeError(f"{flag} {value}: not a directory")
        return path
    what, mark = MARKS[flag]
    try:
        mode = (path / mark).stat().st_mode
    except PermissionError as e:
        raise PyprobeError(f"{flag} {value}: {e.strerror} ({path / mark})") from None
    except OSError:
        mode = 0
    if not (stat.S_ISREG(mode) if mark == "stat" else stat.S_ISDIR(mode)):
        raise PyprobeError(f"{flag} {value}: not a {what} (no {Path(value) / mark})")
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _resolve_under(root: Path, path: Path, depth: int = 0) -> Path:
    """path (absolute, the host's) under root, following each link the way
    the host would: an absolute target restarts at root, `..` stops there."""
    if depth > 40:
        raise OSError(f"too many levels of symbolic links: {path}")
    done = root
    parts = list(path.relative_to("/").parts) if path.is_absolute() else list(path.parts)
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            done = done.parent if done != root else root
            continue
        nxt = done / part
        try:
            target = os.readlink(nxt)
        except OSError:
            done = nxt  # not a link (or not there: the caller's stat says so)
            continue
        rest = Path(*parts) if parts else Path()
        if target.startswith("/"):
            return _resolve_under(root, Path(target) / rest, depth + 1)
        relative = done.relative_to(root) / target / rest
        return _resolve_under(root, Path("/") / relative, depth + 1)
    return done


_IN_USE = [HostPaths()]


def host() -> HostPaths:
    """The host paths this process reads (HostPaths() unless the CLI set others)."""
    return _IN_USE[0]


def use(paths: HostPaths) -> HostPaths:
    """Read the host at these paths from now on; returns the previous ones."""
    previous, _IN_USE[0] = _IN_USE[0], paths
    return previous
