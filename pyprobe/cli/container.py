"""What `pyprobe doctor` says of capabilities and, inside a container, of
what the container lacks: each missing piece with the podman flag and the
Kubernetes field that give it (kernel/container.py finds the facts)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ..kernel.container import Confinement, held, missing, mount_type
from ..kernel.env import CAP_SYS_ADMIN, KernelEnv

OK, NO, INFO = "ok", "!!", "--"
Line = tuple[str, str, str]  # mark, what, detail
BPF_FS_TYPE = "bpf"


def fix(podman: str, kubernetes: str) -> str:
    """The advice for a container: the podman flag and the Kubernetes field."""
    return f"podman run {podman} …; Kubernetes: {kubernetes}"


def capability_lines(env: KernelEnv, confinement: Confinement) -> Iterator[Line]:
    have = held(env.cap_eff)
    yield (
        OK if env.can_load_bpf else NO,
        "capabilities",
        ", ".join(have) if have else "none: run as root (or grant CAP_BPF+CAP_PERFMON)",
    )
    if not have and not confinement.in_container:
        return  # not root: the line above says it all
    for cap, must in missing(env.release, env.cap_eff):
        short = cap.name.removeprefix("CAP_")
        if confinement.in_container:
            how = fix(f"--cap-add={short}", f'securityContext.capabilities.add: ["{short}"]')
        else:
            how = f"run as root, or grant it (systemd: AmbientCapabilities={cap.name})"
        yield NO if must else INFO, "capabilities", f"missing {cap.name}: {cap.used_for} — {how}"


def container_lines(env: KernelEnv, c: Confinement) -> Iterator[Line]:
    """Where this process runs, and what of the host it reaches from there."""
    if not c.in_container:
        yield INFO, "container", "no: the host's pid, user and cgroup namespaces"
        return
    namespaced = any("namespace" in m for m in c.markers)
    yield (
        INFO,
        "container",
        "yes: "
        + "; ".join(c.markers)
        + ("" if namespaced else " (with the host's pid, user and cgroup namespaces)"),
    )
    procfs = c.procfs
    if c.rootless:
        yield (
            NO,
            "user namespace",
            f"{c.user_ns} is not the host's (rootless): capabilities here do not count "
            "for BPF — run it as root (sudo podman run, no --userns); "
            "Kubernetes: spec.hostUsers: true",
        )
    if c.host_pids is None:
        yield (
            NO,
            "host pids",
            f"cannot tell: no process's ns/pid in {procfs} is readable (CAP_SYS_PTRACE) — "
            + fix("--cap-add=SYS_PTRACE", 'securityContext.capabilities.add: ["SYS_PTRACE"]'),
        )
    elif c.host_pids:
        yield OK, "host pids", f"{procfs} shows the host's processes"
    else:
        yield (
            NO,
            "host pids",
            f"no: {procfs} shows this pid namespace's processes: the host's network "
            "namespaces, socket owners and the pids BPF reports are out of sight — "
            + fix("--pid=host", "spec.hostPID: true")
            + " (or the host's /proc mounted at a path given as --path.procfs)",
        )
    if c.host_network:
        yield OK, "host network", "the host's network namespace"
    elif c.host_network is None:
        yield INFO, "host network", "cannot tell without the host's pid 1 (host pids above)"
    else:
        enters = env.has_cap(CAP_SYS_ADMIN) and c.host_pids
        yield (
            INFO if enters else NO,
            "host network",
            f"no: namespace {c.net_ns}, the host's is {c.host_net_ns}; its devices and "
            "sockets are read by entering it"
            + (" (CAP_SYS_ADMIN: held)" if enters else ", which needs CAP_SYS_ADMIN")
            + " — or "
            + fix("--network=host", "spec.hostNetwork: true"),
        )
    yield from _filesystems(env)


def _filesystems(env: KernelEnv) -> Iterator[Line]:
    bpffs = env.host.bpffs
    kind = mount_type(bpffs)
    if kind == BPF_FS_TYPE:
        yield INFO, "bpffs", f"mounted at {bpffs} (pyprobe pins nothing there)"
    else:
        yield (
            INFO,
            "bpffs",
            f"not mounted at {bpffs}: not needed (pyprobe pins nothing; "
            "`bpftool prog show` lists its programs without it)",
        )
    if env.host.sysfs != Path("/sys") and not _own_tracefs():
        yield (
            INFO,
            "tracefs (bcc)",
            "not at /sys/kernel/tracing: bcc attaches classic tracepoints (the fallbacks) "
            "through this process's own — "
            + _mount("/sys/kernel/tracing", Path("/sys/kernel/tracing")),
        )


def _own_tracefs() -> bool:
    return any(
        Path(p, "events").is_dir() for p in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
    )


def _mount(host: str, where: Path, options: str = "") -> str:
    """The host's directory mounted at where: podman's -v and Kubernetes' hostPath."""
    at = "the same path" if where == Path(host) else str(where)
    return fix(f"-v {host}:{where}{options}", f"a hostPath volume {host} at {at}")


def btf_advice(env: KernelEnv) -> str:
    return _mount("/sys/kernel/btf", env.host.sys("kernel", "btf"), ":ro")


def tracefs_advice(env: KernelEnv) -> str:
    return _mount("/sys/kernel/tracing", env.host.tracefs_candidates[0])


def headers_advice(env: KernelEnv) -> str:
    """The host's headers at the same paths (bcc's own /lib/modules), or
    the host's root at --path.rootfs (pyprobe hands bcc the headers there)."""
    return (
        fix(
            "-v /lib/modules:/lib/modules:ro -v /usr/src:/usr/src:ro",
            "hostPath volumes /lib/modules and /usr/src at the same paths",
        )
        + " (or the host's / at a path given as --path.rootfs)"
    )
