"""doctor's capabilities and container checks over fake facts: which
capability is needed on which kernel, the exact advice (podman flag,
Kubernetes field), and hostPID/hostNetwork read from a fake --path.procfs."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest
from fakes import fake_env

from pyprobe.cli.container import capability_lines, container_lines
from pyprobe.kernel.container import BY_NAME, Confinement, host_process, missing, needed
from pyprobe.kernel.host import PID_INIT_INO, HostPaths

ALL = (1 << 41) - 1


def without(*names: str) -> int:
    return ALL & ~sum(1 << BY_NAME[n].bit for n in names)


def confined(**over) -> Confinement:
    """A container with the host's pids (its /proc at /host/proc) and its own netns."""
    base = dict(
        markers=("/run/.containerenv (podman)", "pid namespace 4026532300 is not the host's"),
        pid_ns=4026532300,
        user_ns=0xEFFFFFFD,
        net_ns=4026532301,
        host_pid_ns=PID_INIT_INO,
        host_net_ns=4026531840,
        procfs=Path("/host/proc"),
    )
    base.update(over)
    return Confinement(**base)  # type: ignore[arg-type]


HOST = confined(markers=(), pid_ns=PID_INIT_INO, net_ns=4026531840, procfs=Path("/proc"))


def test_what_is_needed_depends_on_the_kernel(monkeypatch):
    monkeypatch.setattr(resource, "getrlimit", lambda _: (8 << 20, 8 << 20))
    # 5.8+: CAP_BPF and CAP_PERFMON, unless CAP_SYS_ADMIN stands in for them
    assert {n for n, must in needed("6.1.0", without("CAP_SYS_ADMIN")).items() if must} == {
        "CAP_BPF",
        "CAP_PERFMON",
    }
    assert not any(needed("6.18.4-fc", ALL).values())
    # before 5.8 there is no CAP_BPF: CAP_SYS_ADMIN loads programs
    old = needed("5.4.0-150-generic", ALL)
    assert "CAP_BPF" not in old and old["CAP_SYS_ADMIN"] is True
    # before 5.11 maps are charged to RLIMIT_MEMLOCK: raising it takes CAP_SYS_RESOURCE
    assert needed("5.10.0", ALL)["CAP_SYS_RESOURCE"] is True
    assert "CAP_SYS_RESOURCE" not in needed("5.11.0", ALL)
    monkeypatch.setattr(resource, "getrlimit", lambda _: (resource.RLIM_INFINITY,) * 2)
    assert needed("5.10.0", ALL)["CAP_SYS_RESOURCE"] is False


def test_missing_lists_the_needed_first_and_not_what_sys_admin_covers():
    lacking = missing("6.1.0", without("CAP_BPF", "CAP_SYSLOG", "CAP_SYS_ADMIN"))
    assert [(c.name, must) for c, must in lacking] == [
        ("CAP_BPF", True),
        ("CAP_SYS_ADMIN", False),
        ("CAP_SYSLOG", False),
    ]
    assert missing("6.1.0", without("CAP_BPF", "CAP_PERFMON")) == []  # CAP_SYS_ADMIN held


def test_a_container_gets_the_podman_flag_and_the_kubernetes_field():
    env = fake_env(cap_eff=without("CAP_BPF", "CAP_SYS_ADMIN"), release="6.1.0")
    lines = list(capability_lines(env, confined()))
    assert lines[1:] == [
        (
            "!!",
            "capabilities",
            "missing CAP_BPF: load BPF programs — podman run --cap-add=BPF …; "
            'Kubernetes: securityContext.capabilities.add: ["BPF"]',
        ),
        (
            "--",
            "capabilities",
            "missing CAP_SYS_ADMIN: enter other network namespaces (their devices, "
            "sockets, qdiscs), --bpf-stats — podman run --cap-add=SYS_ADMIN …; "
            'Kubernetes: securityContext.capabilities.add: ["SYS_ADMIN"]',
        ),
    ]
    assert lines[0][0] == "!!"  # CAP_PERFMON alone loads nothing


def test_on_a_host_the_advice_is_root_or_systemd():
    env = fake_env(cap_eff=without("CAP_SYSLOG"))
    assert list(capability_lines(env, HOST))[1:] == [
        (
            "--",
            "capabilities",
            "missing CAP_SYSLOG: kernel addresses in /proc/kallsyms (drop locations by "
            "name) — run as root, or grant it (systemd: AmbientCapabilities=CAP_SYSLOG)",
        )
    ]
    # not root at all: the one line says so, as before
    assert list(capability_lines(fake_env(cap_eff=0), HOST)) == [
        ("!!", "capabilities", "none: run as root (or grant CAP_BPF+CAP_PERFMON)")
    ]


def lines(env, c) -> dict[str, tuple[str, str]]:
    return {what: (mark, detail) for mark, what, detail in container_lines(env, c)}


def test_host_pids_and_network():
    env = fake_env()
    seen = lines(env, confined())
    assert seen["container"] == (
        "--",
        "yes: /run/.containerenv (podman); pid namespace 4026532300 is not the host's",
    )
    assert seen["host pids"] == ("ok", "/host/proc shows the host's processes")
    mark, detail = seen["host network"]
    assert mark == "--"  # entered with CAP_SYS_ADMIN
    assert detail.startswith("no: namespace 4026532301, the host's is 4026531840")
    assert detail.endswith("podman run --network=host …; Kubernetes: spec.hostNetwork: true")
    # without CAP_SYS_ADMIN the host's devices and sockets are out of reach
    assert lines(fake_env(cap_eff=without("CAP_SYS_ADMIN")), confined())["host network"][0] == "!!"
    # its own /proc only: the host's processes are out of sight
    own = lines(env, confined(host_pid_ns=4026532300, procfs=Path("/proc")))
    mark, detail = own["host pids"]
    assert mark == "!!" and detail.startswith("no: /proc shows this pid namespace's processes")
    assert "podman run --pid=host …; Kubernetes: spec.hostPID: true" in detail
    assert own["host network"][0] == "--"  # cannot tell
    assert "user namespace" not in own
    rootless = lines(env, confined(user_ns=4026532400))["user namespace"]
    assert rootless[0] == "!!" and "Kubernetes: spec.hostUsers: true" in rootless[1]
    assert lines(env, HOST) == {
        "container": ("--", "no: the host's pid, user and cgroup namespaces")
    }


def fake_proc(tmp_path: Path, links: dict[str, str]) -> Path:
    for rel, target in links.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    return tmp_path


@pytest.mark.parametrize(
    "links,found",
    [
        # the host's: pid 1 in the initial pid namespace
        (
            {"1/ns/pid": f"pid:[{PID_INIT_INO}]", "1/ns/net": "net:[7]"},
            ("1", PID_INIT_INO, 7),
        ),
        # an init that may not be looked at: kthreadd (2) says it
        (
            {"2/ns/pid": f"pid:[{PID_INIT_INO}]", "2/ns/net": "net:[7]", "9/ns/pid": "pid:[5]"},
            ("2", PID_INIT_INO, 7),
        ),
        # a container's own /proc: no process in the initial one
        ({"1/ns/pid": "pid:[5]", "1/ns/net": "net:[6]", "3/ns/pid": "pid:[5]"}, ("1", 5, None)),
        ({}, None),
    ],
)
def test_the_hosts_processes_in_a_procfs(tmp_path, links, found):
    assert host_process(fake_proc(tmp_path, links)) == found


def test_confinement_reads_the_given_procfs(tmp_path):
    proc = fake_proc(tmp_path, {"1/ns/pid": f"pid:[{PID_INIT_INO}]", "1/ns/net": "net:[7]"})
    c = Confinement.detect(HostPaths(procfs=proc))
    assert (c.host_pid_ns, c.host_net_ns, c.procfs) == (PID_INIT_INO, 7, proc)
    assert c.host_pids is True
    assert c.host_network is False  # this process is not in namespace 7
