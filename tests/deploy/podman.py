"""podman for the deployed form's tests: the image `make image` builds, the
DaemonSet's pod template played as a Pod, containers that make traffic, and
a teardown that leaves no pod, container, volume, image or cgroup behind.

Every podman call reads deploy/podman/containers.conf (CONTAINERS_CONF):
runc, limits this host can give; it says why."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from pyprobe.kernel import cgroups

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "deploy" / "podman" / "containers.conf"
BUILD = ROOT / "deploy" / "image" / "build.sh"
DAEMONSET = ROOT / "deploy" / "kubernetes" / "daemonset.yaml"
ENV = {**os.environ, "CONTAINERS_CONF": str(CONF)}
PAUSE = "localhost/podman-pause"  # the infra image podman builds for pods


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    run = subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )
    if check and run.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {run.returncode}: {run.stderr}")
    return run


def build_image() -> tuple[str, float, str]:
    """deploy/image/build.sh (cached unless its inputs changed): the image's
    name, how long the build took, and what it said."""
    start = time.monotonic()
    run = subprocess.run([str(BUILD)], capture_output=True, text=True, timeout=1200)
    took = time.monotonic() - start
    if run.returncode != 0:
        raise AssertionError(f"{BUILD} exit {run.returncode}:\n{run.stderr[-3000:]}")
    built = re.search(r"^image: (?:built|cached:) (\S+)", run.stderr, re.M)
    assert built, run.stderr
    return built.group(1), took, run.stderr


def image_inspect(image: str) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


def why_no_containers(image: str) -> str | None:
    """None when podman runs a container here, else its one-line error."""
    run = podman(
        "run", "--rm", "--network", "none", "--entrypoint", "/bin/true", image, check=False
    )
    if run.returncode == 0:
        return None
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit {run.returncode}"


def export_options(image: str) -> set[str]:
    """The options `pyprobe export` in the image knows (its --help)."""
    out = podman("run", "--rm", "--network", "none", image, "--help").stdout
    return set(re.findall(r"(?m)^\s+(--[a-z][a-z.-]+)", out))


# -- the DaemonSet as a Pod -------------------------------------------------------------
def daemonset() -> dict:
    return yaml.safe_load(DAEMONSET.read_text())


@dataclass
class PlayedPod:
    """The Pod made from the DaemonSet's template, and what was changed to
    play it here (each change is podman's dialect or this test's, listed)."""

    name: str
    port: int
    manifest: dict
    changes: list[str] = field(default_factory=list)
    unknown_args: list[str] = field(default_factory=list)


def pod_from_daemonset(
    ds: dict, name: str, image: str, port: int, known: set[str], env: dict[str, str] | None = None
) -> PlayedPod:
    """spec.template.spec as a Pod's spec, with only these changes:
    - the exporter listens on 127.0.0.1:port (the host's network is shared:
      9977 may be taken, and a test listens on loopback only);
    - args `pyprobe export` in this image does not know are left out and
      listed (a test fails on any: the manifest and the image disagree);
    - podman kube play 4.3 reads the seccomp profile from the pod's
      annotation only (securityContext.seccompProfile becomes it);
    - it turns containerPort into a port mapping, refused with the host's
      network (the ports go: with hostNetwork they only document);
    - it runs httpGet probes as curl inside the image (Kubernetes' kubelet
      probes from outside; the image has no curl): the probes go;
    - it restarts init containers under restartPolicy Always (Kubernetes
      does not): the Pod restarts on failure only;
    - the image is this build's, by the name the test tagged it with."""
    template = ds["spec"]["template"]
    spec = copy.deepcopy(template["spec"])
    played = PlayedPod(name, port, {})
    seccomp = spec.get("securityContext", {}).pop("seccompProfile", None)
    annotations = dict(template["metadata"].get("annotations", {}))
    if seccomp:
        value = {"Unconfined": "unconfined", "RuntimeDefault": "runtime/default"}[seccomp["type"]]
        annotations["seccomp.security.alpha.kubernetes.io/pod"] = value
        played.changes.append(f"seccompProfile {seccomp['type']} as the annotation")
    spec["restartPolicy"] = "OnFailure"
    played.changes.append("restartPolicy OnFailure")
    for c in spec.get("initContainers", []) + spec["containers"]:
        c["image"] = image
        for key in ("ports", "livenessProbe", "readinessProbe"):
            if c.pop(key, None) is not None:
                played.changes.append(f"{c['name']}: no {key}")
        args = []
        for arg in c.get("args", []):
            flag = arg.split("=", 1)[0]
            if flag == "--web.listen-address":
                arg = f"--web.listen-address=127.0.0.1:{port}"
            elif flag.startswith("--") and flag not in known:
                played.unknown_args.append(arg)
                continue
            args.append(arg)
        if "args" in c:
            c["args"] = args
        if env and c["name"] == "exporter":
            c["env"] = [*c.get("env", []), *({"name": k, "value": v} for k, v in env.items())]
    metadata = {"name": name, "labels": dict(template["metadata"]["labels"])}
    if annotations:
        metadata["annotations"] = annotations
    played.manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    return played


class Pods:
    """Pods played here, torn down with everything they made: their
    containers and volumes (kube down), the cgroups podman leaves in the v2
    and name=systemd hierarchies on a hybrid host, the pause image if this
    test made podman build it."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.played: dict[str, Path] = {}
        self.pod_ids: dict[str, str] = {}
        self.pause_existed = bool(podman("images", "-q", PAUSE).stdout.strip())

    def play(self, pod: PlayedPod) -> None:
        path = self.workdir / f"{pod.name}.yaml"
        path.write_text(yaml.safe_dump(pod.manifest, sort_keys=False))
        self.played[pod.name] = path
        run = podman("kube", "play", str(path), check=False)
        pod_id = podman("pod", "inspect", "--format", "{{.Id}}", pod.name, check=False).stdout
        if pod_id.strip():
            self.pod_ids[pod.name] = pod_id.strip()
        if run.returncode != 0:
            raise AssertionError(f"podman kube play: exit {run.returncode}: {run.stderr}")

    def down(self, name: str) -> None:
        path = self.played.pop(name, None)
        if path is not None:
            podman("kube", "down", str(path), check=False)
        podman("pod", "rm", "-f", "--ignore", name, check=False)
        pod_id = self.pod_ids.pop(name, None)
        if pod_id:
            remove_cgroups(pod_id)

    def close(self) -> None:
        for name in list(self.played):
            self.down(name)
        if not self.pause_existed:
            tags = podman("images", "--format", "{{.Repository}}:{{.Tag}}", PAUSE).stdout
            for tag in tags.split():
                podman("rmi", "--ignore", tag, check=False)


def remove_cgroups(pod_id: str) -> None:
    """The pod's cgroup directories podman did not remove (each is empty once
    its containers are gone), in every hierarchy."""
    for parent in Path("/sys/fs/cgroup").glob("*/libpod_parent"):
        top = parent / pod_id
        if top.is_dir():
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), reverse=True):
                d.rmdir()
            top.rmdir()


def leftovers(prefix: str) -> list[str]:
    """Pods, containers and volumes whose names start with prefix, and pod
    cgroups that outlived their pods."""
    out = []
    for kind, cmd in (
        ("pod", ["pod", "ps", "--format", "{{.Name}}"]),
        ("container", ["ps", "-a", "--format", "{{.Names}}"]),
        ("volume", ["volume", "ls", "--format", "{{.Name}}"]),
    ):
        out += [f"{kind} {n}" for n in podman(*cmd).stdout.split() if n.startswith(prefix)]
    return out


def cgroup_dirs(pod_or_ctr_id: str) -> list[str]:
    return [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/libpod_parent/**/*{pod_or_ctr_id}*")]


# -- containers that make traffic ----------------------------------------------------------
@dataclass
class Workload:
    """A container in its own network namespace (--network none: loopback
    only) and its own cgroup, idle until told to make connections."""

    name: str
    id: str
    pid: int

    @property
    def short(self) -> str:
        return self.id[:12]

    def exec_python(self, code: str, *args: str) -> str:
        return podman("exec", self.name, "/usr/bin/python3", "-c", code, *args).stdout

    def snmp(self, proto: str = "Tcp") -> dict[str, int]:
        """The Tcp: (or Udp:) counters of the container's network namespace,
        as its kernel counts them (/proc/PID/net is the namespace of PID)."""
        lines = [
            ln.split()
            for ln in Path(f"/proc/{self.pid}/net/snmp").read_text().splitlines()
            if ln.startswith(f"{proto}:")
        ]
        return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))

    def lose(self, port: int, every: int) -> None:
        """In the container's namespace, drop every `every`-th full-sized
        segment to `port` as it arrives (nftables: this kernel has no netem),
        so that what is sent to it is retransmitted."""
        rule = (
            "add table inet pyprobe_loss;"
            " add chain inet pyprobe_loss in { type filter hook input priority 0; };"
            f" add rule inet pyprobe_loss in tcp dport {port} meta length > 1000"
            f" numgen inc mod {every} == 0 drop"
        )
        run = subprocess.run(
            ["nsenter", f"--net=/proc/{self.pid}/ns/net", "nft", rule],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr

    def cgroup_v2(self) -> str:
        for line in Path(f"/proc/{self.pid}/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
        return ""

    def cgroup_id(self) -> int:
        """Its v2 cgroup's id, as BPF sees it: the directory's inode."""
        root = cgroups.v2_root()
        assert root is not None
        return (root / self.cgroup_v2().lstrip("/")).stat().st_ino


def start_workload(name: str, image: str) -> Workload:
    cid = podman(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--entrypoint",
        "/usr/bin/python3",
        image,
        "-c",
        "import time; time.sleep(600)",
    ).stdout.strip()
    pid = int(podman("inspect", "--format", "{{.State.Pid}}", cid).stdout)
    return Workload(name, cid, pid)


# One container's traffic, all over its loopback: n connections to a listener
# (each: connect, one byte each way, close); `refused` connects to a port
# nothing listens on (a SYN answered by a reset); `datagrams` UDP datagrams to
# a socket with a 1 KiB receive buffer that never reads (all but the first
# dropped, in the loopback's receive softirq); and 2 MB sent on one more
# connection to port LOSSY, where Workload.lose() drops segments (they are
# retransmitted, from softirq and from timers). Prints when done.
LOSSY = 7800
TRAFFIC = r"""
import socket, sys, threading
n, refused, datagrams, lossy = map(int, sys.argv[1:5])
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(64)
port = srv.getsockname()[1]
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", port), timeout=5)
    a, _ = srv.accept()
    c.sendall(b"x"); a.recv(1); a.sendall(b"y"); c.recv(1)
    c.close(); a.close()
srv.close()
for _ in range(refused):
    try:
        socket.create_connection(("127.0.0.1", 9), timeout=5).close()
    except ConnectionRefusedError:
        pass
full = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
full.bind(("127.0.0.1", 0))
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(datagrams):
    u.sendto(b"u" * 1000, full.getsockname())
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", lossy)); srv.listen()
def sink():
    a, _ = srv.accept()
    while a.recv(65536):
        pass
    a.close()
t = threading.Thread(target=sink); t.start()
c = socket.create_connection(("127.0.0.1", lossy), timeout=30)
c.sendall(b"r" * 2_000_000); c.close(); t.join()
print("done")
"""


# -- streams, from the image, with the DaemonSet's privileges -------------------------------
@dataclass
class Stream:
    """`pyprobe PROBE --stream -j ...` in a container of the image: the
    DaemonSet's capabilities, read-only root, the host's network and its /sys
    at /host/sys, given as --path.sysfs (the cgroup tree it names containers
    by), as the DaemonSet gives it."""

    name: str

    def stop(self, within: float = 30) -> tuple[list[dict], str]:
        """Ctrl-C, then its events and what it said on stderr; removed."""
        try:
            podman("kill", "-s", "INT", self.name, check=False)
            podman("wait", self.name, timeout=within)
            run = podman("logs", self.name)
        finally:
            podman("rm", "-f", "-t", "0", self.name, check=False)
        events = [json.loads(ln) for ln in run.stdout.splitlines() if ln.startswith("{")]
        return events, run.stderr


def start_stream(name: str, image: str, caps: list[str], *argv: str) -> Stream:
    podman(
        "run", "-d", "--name", name, "--network", "host",
        "--cap-drop", "all", "--cap-add", ",".join(caps),
        "--security-opt", "seccomp=unconfined", "--read-only", "--tmpfs", "/tmp",
        "-v", "/lib/modules:/lib/modules:ro", "-v", "/usr/src:/usr/src:ro",
        "-v", "/sys:/host/sys:ro,rslave",
        "--entrypoint", "/usr/bin/pyprobe", image, "--path.sysfs=/host/sys", *argv,
    )  # fmt: skip
    stream = Stream(name)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        said = podman("logs", name, check=False).stderr
        if "Tracing" in said:
            return stream
        state = podman("inspect", "--format", "{{.State.Status}}", name, check=False).stdout
        if state.strip() == "exited":
            break
        time.sleep(0.1)
    stream.stop()
    raise AssertionError(f"pyprobe {' '.join(argv)} in the image never started: {said}")
