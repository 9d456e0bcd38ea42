"""--path.procfs, --path.sysfs, --path.rootfs over fake roots: what each flag
accepts and refuses (one line, exit 2, before anything is loaded or bound),
and that every reader of the host's files reads under them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import FakeLoader, fake_env

from pyprobe import cli
from pyprobe.cli.common import Context
from pyprobe.exporter import bpfstats
from pyprobe.kernel import cgroups, headers, procfs
from pyprobe.kernel.env import KernelEnv
from pyprobe.kernel.host import PID_INIT_INO, HostPaths, check, host, use
from pyprobe.kernel.symbols import Symbols
from pyprobe.load import cache
from pyprobe.netns import namespaces, sockets

SOFTIRQS = """\
                    CPU0       CPU1
          HI:          1          2
      NET_RX:        300     400000
"""
STAT = """\
cpu  10 0 10 100 0 0 50 0 0 0
cpu0 5 0 5 50 0 0 20 0 0 0
cpu1 5 0 5 50 0 0 30 0 0 0
intr 0
"""
# processed, dropped, time_squeeze, 0..., the CPU in the 13th column
SOFTNET = (
    "0000000a 00000001 00000002 00000000 00000000 00000000 00000000 00000000 "
    "00000000 00000000 00000000 00000000 00000000\n"
    "000000ff 00000000 00000003 00000000 00000000 00000000 00000000 00000000 "
    "00000000 00000000 00000000 00000000 00000001\n"
)
POD_UID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


@pytest.fixture
def root(tmp_path: Path):
    """A host as a container sees it under /host: its proc, sys and root."""
    proc, sys_, rootfs = tmp_path / "proc", tmp_path / "sys", tmp_path / "root"
    files = {
        proc / "stat": STAT,
        proc / "softirqs": SOFTIRQS,
        proc / "net" / "softnet_stat": SOFTNET,
        proc / "kallsyms": "ffffffff81000000 T _stext\nffffffff81000100 t tcp_v4_rcv\n",
        proc / "42" / "comm": "nginx\n",
        proc / "sys" / "kernel" / "bpf_stats_enabled": "1\n",
        sys_ / "devices" / "system" / "cpu" / "possible": "0-63\n",
        sys_ / "fs" / "cgroup" / "unified" / "cgroup.controllers": "cpu memory\n",
        sys_ / "kernel" / "btf" / "vmlinux": "",
        rootfs / "run" / "netns" / "blue": "",
        rootfs / "var" / "lib" / "kubelet" / "pods" / POD_UID / "etc-hosts": (
            "127.0.0.1\tlocalhost\n10.0.0.7\tweb-0.web.default.svc\tweb-0\n"
        ),
        rootfs / "usr" / "src" / "linux-headers-9.9" / "include" / "linux" / "kconfig.h": "",
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    links = {
        proc / "1" / "ns" / "pid": f"pid:[{PID_INIT_INO}]",
        proc / "1" / "ns" / "net": "net:[4026531840]",
        proc / "42" / "ns" / "net": "net:[4026532999]",
        proc / "42" / "fd" / "3": "socket:[777]",
        proc / "42" / "fd" / "4": "/dev/null",
        rootfs / "lib" / "modules" / "9.9" / "build": "/usr/src/linux-headers-9.9",
        rootfs / "usr" / "src" / "linux": "linux-headers-9.9/include/../..",
    }
    for path, target in links.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    for d in (
        sys_ / "kernel" / "tracing" / "events" / "sock" / "inet_sock_set_state",
        sys_ / "bus" / "event_source" / "devices" / "kprobe",
        sys_ / "fs" / "cgroup" / "unified" / "system.slice" / "libpod-0123456789abcdef.scope",
    ):
        d.mkdir(parents=True)
    paths = HostPaths(procfs=proc, sysfs=sys_, rootfs=rootfs)
    previous = use(paths)
    try:
        yield paths
    finally:
        use(previous)


# -- what each flag takes ----------------------------------------------------------


@pytest.mark.parametrize(
    "flag,value,message",
    [
        (
            "--path.procfs",
            "/nonexistent",
            "--path.procfs /nonexistent: not a procfs (no /nonexistent/stat)",
        ),
        ("--path.sysfs", "/tmp", "--path.sysfs /tmp: not a sysfs (no /tmp/kernel)"),
        ("--path.rootfs", "/nonexistent", "--path.rootfs /nonexistent: not a directory"),
        ("--path.rootfs", "/etc/hostname", "--path.rootfs /etc/hostname: not a directory"),
        ("--path.procfs", "", "--path.procfs: an empty path"),
    ],
)
def test_a_wrong_path_is_refused_with_why(flag, value, message):
    with pytest.raises(Exception) as e:
        check(flag, value)
    assert str(e.value) == message


def test_a_procfs_needs_stat_as_a_file_and_a_sysfs_kernel_as_a_directory(tmp_path):
    (tmp_path / "stat").mkdir()
    (tmp_path / "kernel").write_text("")
    with pytest.raises(Exception, match="not a procfs"):
        check("--path.procfs", str(tmp_path))
    with pytest.raises(Exception, match="not a sysfs"):
        check("--path.sysfs", str(tmp_path))


def test_paths_are_made_absolute(root, monkeypatch):
    monkeypatch.chdir(root.procfs.parent)
    paths = HostPaths().with_flag("--path.procfs", "proc").with_flag("--path.rootfs", "root")
    assert paths == HostPaths(procfs=root.procfs, sysfs=Path("/sys"), rootfs=root.rootfs)
    assert not paths.is_default and HostPaths().is_default


# -- bad input through the CLI: one line, exit 2, nothing started --------------------


def run(capsys, *argv, context):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv), context=context)
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


class Untouchable:
    """An env or loader factory a refused command must never call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self):
        self.calls += 1
        raise AssertionError("called")


@pytest.mark.parametrize(
    "argv,line",
    [
        (
            ["export", "--path.procfs", "/nonexistent"],
            "pyprobe: error: --path.procfs /nonexistent: not a procfs (no /nonexistent/stat)\n",
        ),
        (
            ["export", "--path.sysfs", "/tmp"],
            "pyprobe: error: --path.sysfs /tmp: not a sysfs (no /tmp/kernel)\n",
        ),
        (
            ["--path.rootfs", "/nonexistent", "softirqs"],
            "pyprobe: error: --path.rootfs /nonexistent: not a directory\n",
        ),
        (
            ["doctor", "--path.sysfs", "/proc"],
            "pyprobe: error: --path.sysfs /proc: not a sysfs (no /proc/kernel)\n",
        ),
    ],
)
def test_a_wrong_path_is_one_line_and_exit_2_before_anything_starts(capsys, argv, line):
    env, loader = Untouchable(), Untouchable()
    # The exporter's port, taken: were it bound before the paths are checked,
    # the error would be about the port.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = ["--web.listen-address", f"127.0.0.1:{port}"] if argv[0] == "export" else []
        code, out, err = run(capsys, *argv, *extra, context=Context(env=env, loader=loader))
    assert (code, out, err) == (2, "", line)
    assert env.calls == loader.calls == 0
    assert host() == HostPaths()  # main() leaves the process's paths as it found them


def test_the_help_says_which_paths_are_the_hosts(capsys):
    code, out, _ = run(capsys, "export", "--help", context=Context(env=fake_env))
    text = " ".join(out.split())
    assert code == 0
    assert "--path.procfs PATH The host's procfs" in text and "[default: /proc]" in text
    assert "This process's own capabilities and namespace are read from its own /proc" in text
    assert "bcc attaches classic tracepoints through this process's own /sys/kernel/tracing" in text
    assert "/lib/modules (kernel headers: where this process has none, bcc is given" in text


# -- every reader reads under them --------------------------------------------------


def test_procfs_counters_come_from_the_given_procfs(root):
    assert procfs.softirqs() == [
        {"cpu": "0", "vector": "HI", "value": 1},
        {"cpu": "1", "vector": "HI", "value": 2},
        {"cpu": "0", "vector": "NET_RX", "value": 300},
        {"cpu": "1", "vector": "NET_RX", "value": 400000},
    ]
    hz = os.sysconf("SC_CLK_TCK")
    assert procfs.softirq_seconds() == [
        {"cpu": "0", "value": 20 / hz},
        {"cpu": "1", "value": 30 / hz},
    ]
    assert procfs.softnet() == [
        {"cpu": "0", "processed": 10, "dropped": 1, "time_squeeze": 2},
        {"cpu": "1", "processed": 255, "dropped": 0, "time_squeeze": 3},
    ]


def test_a_group_flag_reaches_a_command(root, capsys):
    """`pyprobe --path.procfs P softirqs`: the kernel's counters from P."""
    context = Context(env=fake_env, loader=lambda: FakeLoader())
    code, out, err = run(
        capsys, "--path.procfs", str(root.procfs), "softirqs", "-j", "0.05", "1", context=context
    )
    assert code == 0, err
    rows = json.loads(out)["rows"]
    assert {(r["metric"], r["cpu"], r.get("vector")): r["value"] for r in rows} == {
        ("softirqs_total", "0", "HI"): 1,
        ("softirqs_total", "1", "HI"): 2,
        ("softirqs_total", "0", "NET_RX"): 300,
        ("softirqs_total", "1", "NET_RX"): 400000,
        ("softirq_cpu_seconds_total", "0", None): 20 / os.sysconf("SC_CLK_TCK"),
        ("softirq_cpu_seconds_total", "1", None): 30 / os.sysconf("SC_CLK_TCK"),
    }


def test_kernel_symbols_from_the_given_procfs(root):
    assert Symbols().name(0xFFFFFFFF81000104) == "tcp_v4_rcv+0x4"


def test_namespaces_names_and_owners_from_the_given_trees(root):
    blue = os.stat(root.rootfs / "run" / "netns" / "blue").st_ino
    assert namespaces.named_netns() == {blue: "blue"}
    assert namespaces.netns_paths() == {
        blue: [str(root.rootfs / "run" / "netns" / "blue")],
        4026531840: [f"{root.procfs}/1/ns/net"],
        4026532999: [f"{root.procfs}/42/ns/net"],
    }
    assert namespaces.resolve_netns("blue") == blue
    with pytest.raises(Exception, match=f"not in {root.rootfs}/run/netns"):
        namespaces.resolve_netns("red")
    assert sockets.socket_owners() == {777: (42, "nginx")}


def test_kernel_facts_from_the_given_sysfs(root):
    env = KernelEnv.detect()
    assert env.host == root
    assert env.tracefs == root.sysfs / "kernel" / "tracing"
    assert env.tracepoint_exists("sock:inet_sock_set_state")
    assert env.btf_path == root.sysfs / "kernel" / "btf" / "vmlinux"
    assert env.kprobes  # the kprobe PMU's directory in this sysfs
    assert cache._possible_cpus() == "0-63"
    assert bpfstats.stats_enabled()


def test_cgroups_and_pods_from_the_given_trees(root):
    assert cgroups.v2_root() == root.sysfs / "fs" / "cgroup" / "unified"
    assert cgroups.kubelet_pods() == {POD_UID: "web-0"}
    tree = cgroups.Cgroups()
    leaf = root.sysfs / "fs" / "cgroup" / "unified" / "system.slice"
    leaf = leaf / "libpod-0123456789abcdef.scope"
    found = tree.get(os.stat(leaf).st_ino)
    assert found is not None
    assert (found.path, found.container) == (
        "/system.slice/libpod-0123456789abcdef.scope",
        "podman:0123456789ab",
    )


def test_host_links_are_followed_inside_rootfs(root):
    headers = root.rootfs / "usr" / "src" / "linux-headers-9.9"
    # an absolute target is the host's: under rootfs, not this process's /usr/src
    assert root.resolve("/lib/modules/9.9/build") == headers
    assert root.modules("9.9") == root.rootfs / "lib" / "modules" / "9.9"  # not followed
    assert root.resolve("/lib/modules/9.9/build/include") == headers / "include"
    # a relative one, with `..` that cannot climb above the root
    assert root.resolve("/usr/src/linux") == root.rootfs / "usr" / "src"
    assert root.resolve("/../../usr/src/linux-headers-9.9") == headers


def test_the_hosts_split_headers_are_joined_for_bcc(root, monkeypatch):
    """Debian's build (generated) and source (the rest) halves, as one tree."""
    src = root.rootfs / "usr" / "src"
    build, common = src / "linux-headers-9.9-amd64", src / "linux-headers-9.9-common"
    for path in (
        build / "include" / "generated" / "autoconf.h",
        build / "arch" / "x86" / "include" / "generated" / "asm" / "a.h",
        build / "Makefile",
        common / "include" / "linux" / "kconfig.h",
        common / "arch" / "x86" / "include" / "asm" / "b.h",
        common / "Makefile",
        root.rootfs / "usr" / "lib" / "kbuild" / "scripts" / "x",
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(path.parent.name)
    (build / "scripts").symlink_to("../../lib/kbuild/scripts")  # relative: the host's
    (common / "tools").symlink_to("/usr/lib/kbuild")  # absolute: the host's too
    modules = root.rootfs / "lib" / "modules" / "9.10"
    modules.mkdir(parents=True)
    (modules / "build").symlink_to("/usr/src/linux-headers-9.9-amd64")
    (modules / "source").symlink_to("/usr/src/linux-headers-9.9-common")
    # a kernel 9.10 with no headers in this process's /lib/modules: the host's
    monkeypatch.setattr(os, "uname", lambda: SimpleNamespace(release="9.10"))
    env = KernelEnv.detect()
    assert (env.headers, env.headers_from_host) == (build, True)
    assert headers.host_build(root, "9.10") == build
    tree = headers.bcc_tree(root, "9.10")
    try:
        assert tree.parent == Path(tempfile.gettempdir())  # removed at exit (kernel test)
        assert (tree / "include" / "linux" / "kconfig.h").read_text() == "linux"
        assert (tree / "include" / "generated" / "autoconf.h").read_text() == "generated"
        assert (tree / "arch" / "x86" / "include" / "asm" / "b.h").read_text() == "asm"
        assert (tree / "arch/x86/include/generated/asm/a.h").read_text() == "asm"
        assert (tree / "Makefile").resolve() == build / "Makefile"  # build's first
        assert (tree / "scripts" / "x").read_text() == "scripts"
        assert (tree / "tools" / "scripts" / "x").read_text() == "scripts"
    finally:
        shutil.rmtree(tree)


def test_a_procfs_without_the_counters_is_one_line_not_a_traceback(tmp_path, capsys):
    (tmp_path / "stat").write_text(STAT)  # passes the check, has nothing else
    context = Context(env=fake_env, loader=lambda: FakeLoader())
    code, _, err = run(
        capsys, "--path.procfs", str(tmp_path), "softirqs", "-j", "0.05", "1", context=context
    )
    assert code == 2
    assert err.splitlines() == [  # its intro line, then the error
        "Counting softirqs via kernel counters... every 0.05s",
        f"pyprobe: error: cannot read {tmp_path}/softirqs: No such file or directory "
        "(--path.procfs)",
    ]
