"""Whether this process runs in a container, and what of the host it reaches
from there: the host's processes (hostPID, or the host's /proc mounted at
--path.procfs), the host's network namespace (hostNetwork), the host's user
namespace (not rootless), the capabilities each part of pyprobe needs, and
the filesystems it reads (bpffs). Facts only: `pyprobe doctor` says what to
do about them (cli/container.py).

What is this process's own is read from its own /proc (self); what is the
host's, under the host paths (kernel/host.py).
"""

from __future__ import annotations

import os
import re
import resource
from dataclasses import dataclass
from pathlib import Path

from . import cgroups
from .host import CGROUP_INIT_INO, PID_INIT_INO, USER_INIT_INO, HostPaths

MARKER_FILES = (("/run/.containerenv", "podman"), ("/.dockerenv", "docker"))


@dataclass(frozen=True)
class Capability:
    name: str
    bit: int
    used_for: str


CAPABILITIES = (
    Capability("CAP_BPF", 39, "load BPF programs"),
    Capability("CAP_PERFMON", 38, "attach them to tracepoints"),
    Capability(
        "CAP_SYS_ADMIN",
        21,
        "enter other network namespaces (their devices, sockets, qdiscs), --bpf-stats",
    ),
    Capability(
        "CAP_SYS_PTRACE",
        19,
        "other users' processes' /proc/PID/ns/net and fd (their namespaces, socket owners)",
    ),
    Capability("CAP_SYSLOG", 34, "kernel addresses in /proc/kallsyms (drop locations by name)"),
    Capability("CAP_SYS_RESOURCE", 24, "raise RLIMIT_MEMLOCK for BPF maps (kernels before 5.11)"),
    Capability("CAP_SETUID", 7, "--drop-privileges (become USER)"),
    Capability("CAP_SETGID", 6, "--drop-privileges (take USER's groups)"),
    Capability("CAP_NET_ADMIN", 12, "pyprobe lab (veth, bridges, tc), not the probes"),
)
BY_NAME = {c.name: c for c in CAPABILITIES}


def kernel_version(release: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def needed(release: str, cap_eff: int) -> dict[str, bool]:
    """Capability -> whether pyprobe cannot load a probe without it here
    (True), or only loses what it is used for (False). CAP_SYS_ADMIN stands
    in for CAP_BPF and CAP_PERFMON (bpf_capable(), perfmon_capable()), and is
    what loads BPF before 5.8; memory is charged to the cgroup, not
    RLIMIT_MEMLOCK, from 5.11."""
    version = kernel_version(release)
    admin = bool(cap_eff >> BY_NAME["CAP_SYS_ADMIN"].bit & 1)
    out = {c.name: False for c in CAPABILITIES}
    if version < (5, 8):
        out["CAP_SYS_ADMIN"] = True
        del out["CAP_BPF"], out["CAP_PERFMON"]  # not in this kernel
    elif not admin:
        out["CAP_BPF"] = out["CAP_PERFMON"] = True
    if version >= (5, 11):
        del out["CAP_SYS_RESOURCE"]
    elif resource.getrlimit(resource.RLIMIT_MEMLOCK)[0] != resource.RLIM_INFINITY:
        out["CAP_SYS_RESOURCE"] = True
    return out


def missing(release: str, cap_eff: int) -> list[tuple[Capability, bool]]:
    """(capability, needed) for each one this process lacks that pyprobe uses
    here; the needed ones first."""
    wanted = needed(release, cap_eff)
    lacking = [
        (BY_NAME[name], must)
        for name, must in wanted.items()
        if not cap_eff >> BY_NAME[name].bit & 1
        and not (name in ("CAP_BPF", "CAP_PERFMON") and not must)  # CAP_SYS_ADMIN covers them
    ]
    return sorted(lacking, key=lambda item: not item[1])


def held(cap_eff: int) -> list[str]:
    return [c.name for c in CAPABILITIES if cap_eff >> c.bit & 1]


def ns_inode(path: str | Path) -> int | None:
    """The namespace a /proc/PID/ns/X link names; None where we may not look."""
    try:
        link = os.readlink(path)
    except OSError:
        return None
    m = re.fullmatch(r"\w+:\[(\d+)\]", link)
    return int(m.group(1)) if m else None


def own_cgroup() -> str:
    """This process's cgroup path (v2's line, else the first v1 one)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return ""
    paths = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]
    v2 = [line.split(":", 2)[2] for line in lines if line.startswith("0::")]
    return (v2 or paths or [""])[0]


def mount_type(path: Path, mounts: Path = Path("/proc/self/mounts")) -> str | None:
    """The filesystem mounted at path in this process's mount namespace (its
    own mount table: the path is one of ours), or None."""
    try:
        text = mounts.read_text()
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        fields = line.split()
        if len(fields) > 2 and fields[1].replace("\\040", " ") == str(path):
            found = fields[2]  # the last mount there is the one seen
    return found


def host_process(procfs: Path, scan: int = 32) -> tuple[str, int, int | None] | None:
    """(pid, its pid namespace, its network namespace) of a process of
    procfs that is in the initial pid namespace: pid 1, else kthreadd (2: an
    init that may not be looked at has one), else one of the first `scan`;
    (pid, namespace, None) of the first one readable when none is (procfs
    is a container's); None when none is readable."""
    try:
        pids = sorted((p for p in os.listdir(procfs) if p.isdigit()), key=int)[:scan]
    except OSError:
        return None
    first = None
    for pid in dict.fromkeys(["1", "2", *pids]):
        pid_ns = ns_inode(procfs / pid / "ns" / "pid")
        if pid_ns is None:
            continue
        if pid_ns == PID_INIT_INO:
            return pid, pid_ns, ns_inode(procfs / pid / "ns" / "net")
        first = first or (pid, pid_ns, None)
    return first


@dataclass(frozen=True)
class Confinement:
    """This process against the host."""

    markers: tuple[str, ...]  # what says "container"
    pid_ns: int | None  # this process's
    user_ns: int | None
    net_ns: int | None
    host_pid_ns: int | None  # that of --path.procfs's pid 1 or kthreadd (None: not readable)
    host_net_ns: int | None
    procfs: Path
    host_pid: str = "1"  # the process of procfs the two were read from

    @classmethod
    def detect(cls, paths: HostPaths) -> Confinement:
        pid_ns = ns_inode("/proc/self/ns/pid")
        user_ns = ns_inode("/proc/self/ns/user")
        cgroup_ns = ns_inode("/proc/self/ns/cgroup")
        found = host_process(paths.procfs)
        host_pid, host_pid_ns, host_net_ns = found or ("1", None, None)
        markers = [f"{path} ({runtime})" for path, runtime in MARKER_FILES if Path(path).exists()]
        if pid_ns not in (None, PID_INIT_INO):
            markers.append(f"pid namespace {pid_ns} is not the host's")
        if user_ns not in (None, USER_INIT_INO):
            markers.append(f"user namespace {user_ns} is not the host's")
        if cgroup_ns not in (None, CGROUP_INIT_INO):
            markers.append(f"cgroup namespace {cgroup_ns} is not the host's")
        cgroup = own_cgroup()
        container = cgroups.parse(0, cgroup).container if cgroup else ""
        if container:
            markers.append(f"cgroup {cgroup} ({container.partition(':')[0]})")
        return cls(
            markers=tuple(markers),
            pid_ns=pid_ns,
            user_ns=user_ns,
            net_ns=ns_inode("/proc/self/ns/net"),
            host_pid_ns=host_pid_ns,
            host_net_ns=host_net_ns,
            procfs=paths.procfs,
            host_pid=host_pid,
        )

    @property
    def in_container(self) -> bool:
        return bool(self.markers)

    @property
    def host_pids(self) -> bool | None:
        """Whether --path.procfs shows the host's processes (those of the
        initial pid namespace); None when none of them can be looked at."""
        return None if self.host_pid_ns is None else self.host_pid_ns == PID_INIT_INO

    @property
    def host_network(self) -> bool | None:
        """Whether this process is in the host's network namespace (that of
        the host's pid 1, or kthreadd's); None when neither is in sight."""
        if not self.host_pids or self.host_net_ns is None:
            return None
        return self.net_ns == self.host_net_ns

    @property
    def rootless(self) -> bool:
        """In a user namespace: capabilities there do not count for BPF."""
        return self.user_ns not in (None, USER_INIT_INO)
