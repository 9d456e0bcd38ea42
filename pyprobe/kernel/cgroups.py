"""Which cgroup, container and pod a cgroup id is.

BPF sees a cgroup as its id (bpf_get_current_cgroup_id, or a socket's
cgroup: the cgroup of the task that created it). On cgroup v2 that id is
the inode number of the cgroup's directory under /sys/fs/cgroup, so a walk
of that tree names every id; it is walked again when an id is not known
yet (a container started since), at most every REFRESH seconds.

The container runtimes name their cgroups after the container:
  podman   .../libpod-<id>.scope           (cgroupfs: .../libpod-<id>)
  docker   .../docker-<id>.scope           (cgroupfs: /docker/<id>)
  containerd (CRI)  .../cri-containerd-<id>.scope
  CRI-O    .../crio-<id>.scope             (crio-conmon-<id>: its monitor)
and Kubernetes' pods sit in kubepods[-burstable|-besteffort]-pod<uid>.slice
(systemd driver, the UID's dashes as underscores) or /kubepods/<qos>/pod<uid>/
(cgroupfs). A pod's name and namespace are read from the kubelet's own files
where they are on this host, never asked of a cluster API.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .host import host

CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBELET_PODS = Path("/var/lib/kubelet/pods")
REFRESH = 1.0  # s between walks of the tree for an unknown id
_ID = r"([0-9a-f]{12,64})"
RUNTIMES = (
    ("podman", re.compile(rf"libpod-(?:conmon-)?{_ID}(?:\.scope)?$")),
    ("docker", re.compile(rf"docker-{_ID}\.scope$")),
    ("containerd", re.compile(rf"cri-containerd-{_ID}\.scope$")),
    ("cri-o", re.compile(rf"crio-(?:conmon-)?{_ID}\.scope$")),
)
CGROUPFS = re.compile(rf"^/(docker|kubepods(?:/[a-z]+)?/pod[0-9a-f-]+)/{_ID}$")
POD = re.compile(
    r"kubepods[^/]*-pod([0-9a-f_]{36})\.slice"  # systemd driver
    r"|/kubepods(?:/[a-z]+)?/pod([0-9a-f-]{36})"  # cgroupfs driver
)


@dataclass(frozen=True)
class Cgroup:
    id: int
    path: str  # under the cgroup root, "/" for the root itself
    container: str = ""  # runtime:id, short (12 hex digits), "" for none
    pod: str = ""  # the pod's UID, or namespace/name where the kubelet says

    @property
    def label(self) -> str:
        """What a series shows for it: its container, else its path."""
        return self.container or self.path


def parse(cgroup_id: int, path: str, pods: dict[str, str] | None = None) -> Cgroup:
    """A cgroup's container and pod, from its path alone."""
    leaf = path.rstrip("/").rsplit("/", 1)[-1]
    container = ""
    for runtime, pattern in RUNTIMES:
        m = pattern.search(leaf)
        if m:
            container = f"{runtime}:{m.group(1)[:12]}"
            break
    else:
        m = CGROUPFS.match(path)
        if m:
            runtime = "docker" if m.group(1) == "docker" else "kubernetes"
            container = f"{runtime}:{m.group(2)[:12]}"
    pod = ""
    m = POD.search(path)
    if m:
        uid = (m.group(1) or m.group(2)).replace("_", "-")
        pod = (pods or {}).get(uid, uid)
    return Cgroup(cgroup_id, path, container, pod)


def kubelet_pods(root: Path | None = None) -> dict[str, str]:
    """Pod UID -> namespace/name, from the kubelet's directory on this host:
    each pod's etc-hosts names it (the pod's hostname is its name) and its
    volumes' service account token says its namespace, where present."""
    out: dict[str, str] = {}
    try:
        entries = list((root or host().kubelet_pods).iterdir())
    except OSError:
        return out
    for pod in entries:
        name = namespace = ""
        try:
            for line in (pod / "etc-hosts").read_text().splitlines():
                fields = line.split()
                if (
                    len(fields) >= 2
                    and not line.startswith("#")
                    and fields[0]
                    not in (
                        "127.0.0.1",
                        "::1",
                        "fe00::0",
                        "fe00::1",
                        "fe00::2",
                    )
                ):
                    name = fields[1].split(".")[0]
        except OSError:
            continue
        for token in pod.glob("volumes/kubernetes.io~projected/*/namespace"):
            try:
                namespace = token.read_text().strip()
            except OSError:
                continue
        if name:
            out[pod.name] = f"{namespace}/{name}" if namespace else name
    return out


def v2_root(mounts: Path | None = None) -> Path | None:
    """Where cgroup v2 is mounted: /sys/fs/cgroup (unified), or beside the v1
    hierarchies (hybrid: /sys/fs/cgroup/unified); None when it is not. The
    host's, under --path.sysfs (kernel/host.py), unless a mount table is given."""
    if mounts is None:
        return host().cgroup2()
    try:
        for line in mounts.read_text().splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                return Path(fields[1])
    except OSError:
        pass
    return None


class Cgroups:
    """Cgroup ids -> Cgroup, for every cgroup under the v2 root (BPF's ids
    are v2's, on a hybrid host too)."""

    def __init__(self, root: Path | None = None, kubelet: Path | None = None) -> None:
        self.root = root or v2_root() or host().sys("fs", "cgroup")
        self.kubelet = kubelet or host().kubelet_pods
        self._known: dict[int, Cgroup] = {}
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self, cgroup_id: int) -> Cgroup | None:
        if not cgroup_id:
            return None
        with self._lock:
            found = self._known.get(cgroup_id)
            if found is None and time.monotonic() - self._at > REFRESH:
                self._walk()
                found = self._known.get(cgroup_id)
            return found

    def by_path(self, path: str) -> Cgroup | None:
        """A cgroup by its path under the root (or absolute, under it)."""
        path = "/" + path.removeprefix(str(self.root)).strip("/")
        with self._lock:
            self._walk()
            return next((cg for cg in self._known.values() if cg.path == path), None)

    def by_container(self, given: str) -> list[Cgroup]:
        """The cgroups of the containers whose id starts with `given` (any
        length from 4 hex digits to the full id; "runtime:" prefix allowed),
        the container's own first (not its runtime monitor, the conmon's),
        shallowest first."""
        runtime, _, wanted = given.rpartition(":")
        wanted = wanted.lower()[:12]
        with self._lock:
            self._walk()
            found = [
                cg
                for cg in self._known.values()
                if cg.container
                and cg.container.partition(":")[2].startswith(wanted)
                and (not runtime or cg.container.startswith(runtime + ":"))
            ]
        return sorted(found, key=lambda cg: ("conmon" in cg.path, cg.path.count("/"), cg.path))

    def _walk(self) -> None:
        pods = kubelet_pods(self.kubelet)
        known: dict[int, Cgroup] = {}
        root = str(self.root)
        for directory, _dirs, _files in os.walk(root):
            try:
                inode = os.stat(directory).st_ino
            except OSError:
                continue  # removed while we walked
            path = directory[len(root) :] or "/"
            known[inode] = parse(inode, path, pods)
        self._known = known
        self._at = time.monotonic()


def available() -> bool:
    """cgroup v2 mounted somewhere (ids are its directories' inodes)."""
    root = v2_root()
    return root is not None and (root / "cgroup.procs").exists()
