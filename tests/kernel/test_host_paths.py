"""--path.procfs, --path.sysfs, --path.rootfs for real: a fresh procfs and
sysfs mounted at temporary directories, the exporter reading them against
one reading /proc and /sys and against the kernel's files; namespaces found
from a pid namespace only through the host's procfs; names only through the
given root; BTF only through the given sysfs; and doctor inside a pid
namespace, in a network namespace of the test's, with capabilities dropped."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyprobe.kernel.host import PID_INIT_INO
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from tests.support import PYPROBE, Exporter, get

pytestmark = [pytest.mark.root, pytest.mark.kernel]
COUNTERS = ("softirqs", "napi", "netdev")  # the kernel's own counters (napi: softnet_stat)


def mounts_under(path: Path) -> list[str]:
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [p for p in points if p == str(path) or p.startswith(f"{path}/")]


@pytest.fixture
def trees(tmp_path):
    """A fresh procfs and sysfs at tmp/proc and tmp/sys, unmounted (with what
    was mounted under them, tracefs say) however the test ends."""
    proc, sysfs = tmp_path / "proc", tmp_path / "sys"
    proc.mkdir()
    sysfs.mkdir()
    try:
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        subprocess.run(["mount", "-t", "sysfs", "sysfs", str(sysfs)], check=True)
        yield proc, sysfs
    finally:
        for path in (sysfs, proc):
            subprocess.run(["umount", "--recursive", "--lazy", str(path)], capture_output=True)
        assert mounts_under(tmp_path) == []


def samples(text: str, prefix: str) -> dict[tuple, float]:
    """(name, sorted labels) -> value for the samples whose name starts with prefix."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name.startswith(prefix)
    }


def kernel_softirqs(proc: Path) -> dict[tuple, float]:
    lines = (proc / "softirqs").read_text().splitlines()
    cpus = [c.removeprefix("CPU") for c in lines[0].split()]
    return {
        ("pyprobe_softirqs_total", (("cpu", cpu), ("vector", vector.strip()))): float(n)
        for vector, _, counts in (line.partition(":") for line in lines[1:])
        for cpu, n in zip(cpus, counts.split(), strict=False)
    }


def kernel_softnet(proc: Path) -> dict[tuple, float]:
    out = {}
    for line in (proc / "net" / "softnet_stat").read_text().splitlines():
        cols = [int(c, 16) for c in line.split()]
        for name, value in zip(("processed", "dropped", "times_squeezed"), cols, strict=False):
            out[(f"pyprobe_softnet_{name}_total", (("cpu", str(cols[12])),))] = float(value)
    return out


def ip_link_stats(ns: str, dev: str) -> dict[str, int]:
    """The device's own counters, as iproute2 reads them."""
    out = subprocess.run(
        ["ip", "-j", "-n", ns, "-s", "link", "show", "dev", dev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    stats = json.loads(out)[0]["stats64"]
    return {
        f"{way}_{what}": stats[key][what]
        for way, key in (("receive", "rx"), ("transmit", "tx"))
        for what in ("packets", "bytes")
    }


def test_export_reads_the_kernels_counters_from_the_given_procfs_and_sysfs(trees, tmp_path):
    proc, sysfs = trees
    probes = [arg for name in COUNTERS for arg in ("--probe", name)]
    with VethPair(prefix=f"hp{os.getpid()}", net=41) as pair:
        # 25 datagrams a -> b: b's device counts them (and an ARP exchange)
        def send() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(25):
                    s.sendto(b"x" * 100, (pair.addr_b, 9))

        namespaces.run_in_netns(pair.path(pair.a), send)
        time.sleep(0.2)
        kernel = ip_link_stats(pair.b, pair.dev_b)
        assert kernel["receive_packets"] >= 25
        paths = Exporter(*probes, "--path.procfs", str(proc), "--path.sysfs", str(sysfs))
        plain = Exporter(*probes)
        try:
            assert any(
                'msg="host paths"' in line and f"procfs={proc} sysfs={sysfs} rootfs=/" in line
                for line in paths.log
            ), paths.log
            # tracefs was missing from the fresh sysfs: mounted there, not at /sys
            assert mounts_under(sysfs) == [str(sysfs), str(sysfs / "kernel" / "tracing")]
            k0 = {**kernel_softirqs(proc), **kernel_softnet(proc)}
            via_paths = get(paths.url())[1]
            via_plain = get(plain.url())[1]
            k1 = {**kernel_softirqs(proc), **kernel_softnet(proc)}
        finally:
            paths.stop()
            plain.stop()
        for prefix in ("pyprobe_softirqs_total", "pyprobe_softnet_"):
            p, n = samples(via_paths, prefix), samples(via_plain, prefix)
            want = {k for k in k0 if k[0].startswith(prefix)}
            assert set(p) == set(n) == want  # every CPU and vector the kernel lists
            # read in this order: the kernel's, the exporters', the kernel's again
            assert all(k0[k] <= p[k] <= n[k] <= k1[k] for k in want), prefix
        seconds = samples(via_paths, "pyprobe_softirq_cpu_seconds_total")
        assert set(seconds) == set(samples(via_plain, "pyprobe_softirq_cpu_seconds_total"))
        assert len(seconds) == os.cpu_count()
        # the veth in b: nothing moves there any more; all three say the same
        inode = str(pair.inode(pair.b))
        for name, value in kernel.items():
            labels = {"netns": inode, "netns_name": pair.b, "device": pair.dev_b}
            key = (f"pyprobe_netdev_{name}_total", tuple(sorted(labels.items())))
            assert samples(via_paths, key[0])[key] == samples(via_plain, key[0])[key] == value
        # every namespace and device, both ways
        assert set(samples(via_paths, "pyprobe_netdev_")) == set(
            samples(via_plain, "pyprobe_netdev_")
        )


@pytest.mark.parametrize(
    "args,line",
    [
        (
            ["export", "--path.procfs", "/nonexistent"],
            "pyprobe: error: --path.procfs /nonexistent: not a procfs (no /nonexistent/stat)",
        ),
        (
            ["export", "--path.sysfs", "/tmp"],
            "pyprobe: error: --path.sysfs /tmp: not a sysfs (no /tmp/kernel)",
        ),
        (
            ["export", "--path.rootfs", "/nonexistent"],
            "pyprobe: error: --path.rootfs /nonexistent: not a directory",
        ),
        (
            ["--path.sysfs", "/proc", "doctor"],
            "pyprobe: error: --path.sysfs /proc: not a sysfs (no /proc/kernel)",
        ),
    ],
)
def test_a_wrong_path_is_one_line_and_exit_2(args, line):
    proc = subprocess.run([PYPROBE, *args], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", line + "\n")


def in_pid_namespace(
    *command: str, setup: str = "", net: bool = False
) -> subprocess.CompletedProcess:
    """command as a container runs it: its own pid namespace and /proc
    (unshare --pid --fork --mount-proc), after setup (shell) in there."""
    script = f"{setup}; exec {shlex.join(command)}" if setup else f"exec {shlex.join(command)}"
    return subprocess.run(
        [
            "unshare",
            *(["--net"] if net else []),
            "--pid",
            "--fork",
            "--mount-proc",
            "sh",
            "-c",
            script,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def doctor_lines(stdout: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        m = re.match(r"\[(ok|!!|--)\] (.{14}) (.*)", line)
        if m:
            out.setdefault(m.group(2).strip(), []).append(f"[{m.group(1)}] {m.group(3)}")
    return out


def test_doctor_in_a_pid_namespace_sees_it_is_in_a_container():
    proc = in_pid_namespace(PYPROBE, "doctor", setup="readlink /proc/self/ns/pid >&2")
    pidns = int(re.search(r"pid:\[(\d+)\]", proc.stderr).group(1))
    assert pidns != PID_INIT_INO
    lines = doctor_lines(proc.stdout)
    assert f"pid namespace {pidns} is not the host's" in lines["container"][0]
    assert lines["host pids"] == [
        "[!!] no: /proc shows this pid namespace's processes: the host's network namespaces, "
        "socket owners and the pids BPF reports are out of sight — podman run --pid=host …; "
        "Kubernetes: spec.hostPID: true (or the host's /proc mounted at a path given as "
        "--path.procfs)"
    ]


def test_doctor_with_the_hosts_procfs_in_a_network_namespace_of_its_own(trees):
    proc, _ = trees
    host_net = os.stat("/proc/2/ns/net").st_ino  # kthreadd: the initial namespace
    ran = in_pid_namespace(
        PYPROBE,
        "doctor",
        "--path.procfs",
        str(proc),
        setup="readlink /proc/self/ns/net >&2",
        net=True,
    )
    own_net = int(re.search(r"net:\[(\d+)\]", ran.stderr).group(1))
    lines = doctor_lines(ran.stdout)
    assert lines["host paths"] == [f"[--] procfs {proc}, sysfs /sys, rootfs /"]
    assert lines["host pids"] == [f"[ok] {proc} shows the host's processes"]
    assert lines["host network"] == [
        f"[--] no: namespace {own_net}, the host's is {host_net}; its devices and sockets are "
        "read by entering it (CAP_SYS_ADMIN: held) — or podman run --network=host …; "
        "Kubernetes: spec.hostNetwork: true"
    ]


def test_doctor_advice_for_a_dropped_capability():
    ran = in_pid_namespace(
        "capsh", "--drop=cap_bpf,cap_sys_admin", "--", "-c", shlex.join([PYPROBE, "doctor"])
    )
    assert ran.returncode == 2  # nothing can load
    lines = doctor_lines(ran.stdout)["capabilities"]
    assert lines[0].startswith("[!!] CAP_PERFMON, ")  # what is held, and not enough
    assert lines[1] == (
        "[!!] missing CAP_BPF: load BPF programs — podman run --cap-add=BPF …; "
        'Kubernetes: securityContext.capabilities.add: ["BPF"]'
    )
    assert lines[2] == (
        "[--] missing CAP_SYS_ADMIN: enter other network namespaces (their devices, sockets, "
        "qdiscs), --bpf-stats — podman run --cap-add=SYS_ADMIN …; "
        'Kubernetes: securityContext.capabilities.add: ["SYS_ADMIN"]'
    )
    assert "no probe can load until this is fixed: permission denied" in ran.stdout


def netdev_namespaces(stdout: str) -> dict[str, str]:
    rows = json.loads(stdout.splitlines()[-1])["rows"]
    return {r["netns"]: r["netns_name"] for r in rows}


def test_namespaces_are_found_through_the_hosts_procfs_from_a_pid_namespace(trees):
    """A namespace only a process holds (no name): from a pid namespace of
    its own, pyprobe finds it only through --path.procfs."""
    proc, _ = trees
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    try:
        deadline = time.monotonic() + 5
        while (inode := os.stat(f"/proc/{holder.pid}/ns/net").st_ino) == os.stat(
            "/proc/self/ns/net"
        ).st_ino and time.monotonic() < deadline:
            time.sleep(0.02)  # unshare has not entered it yet
        blind = in_pid_namespace(PYPROBE, "netdev", "-j", "0.1", "1")
        seeing = in_pid_namespace(PYPROBE, "--path.procfs", str(proc), "netdev", "-j", "0.1", "1")
    finally:
        holder.kill()
        holder.wait()
    assert blind.returncode == seeing.returncode == 0, blind.stderr + seeing.stderr
    assert str(inode) not in netdev_namespaces(blind.stdout)
    assert netdev_namespaces(seeing.stdout)[str(inode)] == ""


def private(setup: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """pyprobe ARGS in a private mount namespace after SETUP (shell)."""
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            f"{setup}; exec {shlex.join([PYPROBE, *args])}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_names_come_from_the_given_root(tmp_path):
    """/run/netns hidden from this process; the host's, under --path.rootfs."""
    root = tmp_path / "root"
    (root / "run" / "netns").mkdir(parents=True)
    name = f"hpn{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        inode = str(namespaces.inode_of(f"/run/netns/{name}"))
        hide = f"mount --rbind /run/netns {root}/run/netns; mount -t tmpfs tmpfs /run/netns"
        named = private(hide, "--path.rootfs", str(root), "netdev", "-j", "0.1", "1")
        unnamed = private(hide, "netdev", "-j", "0.1", "1")
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)
    assert named.returncode == unnamed.returncode == 0, named.stderr + unnamed.stderr
    assert netdev_namespaces(named.stdout)[inode] == name
    # without it the namespace is nowhere to be found: no name, no process in it
    assert inode not in netdev_namespaces(unnamed.stdout)


def test_btf_comes_from_the_given_sysfs(tmp_path):
    """/sys/kernel/btf hidden from this process: through --path.sysfs pyprobe
    still has the struct offsets and the tp_btf hook."""
    sysfs = tmp_path / "sys"
    sysfs.mkdir()
    hide = f"mount -t sysfs sysfs {sysfs}; mount -t tmpfs tmpfs /sys/kernel/btf"
    given = private(hide, "--path.sysfs", str(sysfs), "tcpstates", "-d", "0.3")
    blind = private(hide, "tcpstates", "-d", "0.3")
    assert given.returncode == blind.returncode == 0, given.stderr + blind.stderr
    assert "via tp_btf:inet_sock_set_state" in given.stderr
    assert "via tracepoint:sock:inet_sock_set_state" in blind.stderr  # no BTF: the fallback
    doctor = private(hide, "doctor", "--path.sysfs", str(sysfs))
    assert f"[ok] BTF            {sysfs}/kernel/btf/vmlinux" in doctor.stdout


def test_headers_come_from_the_given_root(tmp_path):
    """No headers in this process's /lib/modules: with the host's / at
    --path.rootfs, bcc compiles with the host's (a tree joined from Debian's
    build and source halves, BCC_KERNEL_SOURCE) and the program attaches."""
    root = tmp_path / "root"
    root.mkdir()
    hide = f"mount --bind / {root}; mount -t tmpfs tmpfs /lib/modules"
    tmp = tmp_path / "tmp"  # where the joined tree is made, and removed at exit
    tmp.mkdir()
    given = private(
        hide, "--path.rootfs", str(root), "tcpstates", "-d", "0.3", env={"TMPDIR": str(tmp)}
    )
    blind = private(hide, "tcpstates", "-d", "0.3")
    assert given.returncode == 0, given.stderr
    assert "via tp_btf:inet_sock_set_state" in given.stderr
    assert blind.returncode == 2 and "no kernel headers at /lib/modules/" in blind.stderr
    doctor = private(hide, "doctor", "--path.rootfs", str(root))
    assert (
        "[--] headers        the host's, under --path.rootfs: bcc is given them "
        "(BCC_KERNEL_SOURCE)" in doctor.stdout
    )
    assert list(tmp.iterdir()) == []
