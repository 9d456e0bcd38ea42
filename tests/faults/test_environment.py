"""6. Environment faults, each in a private mount namespace so the machine
is untouched: tracefs unmounted (and not mountable), kernel headers hidden,
BTF hidden, a tracepoint missing. Each gives the fallback or one clear line
and exit 2, and `pyprobe doctor` says what is wrong and how to fix it."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from tests.support import PYPROBE

pytestmark = [pytest.mark.root, pytest.mark.kernel]
UNMOUNT_TRACEFS = "umount -l /sys/kernel/tracing; umount -l /sys/kernel/debug 2>/dev/null || true"
NO_MOUNTING = "capsh --drop=cap_sys_admin --"  # root, but may not mount tracefs again


def private(setup: str, *args: str, wrap: str = "", env: dict | None = None):
    """pyprobe ARGS in a private mount namespace after SETUP (shell)."""
    command = shlex.join([PYPROBE, *args])
    if wrap:
        command = f"{wrap} -c {shlex.quote(command)}"
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            f"{setup}; exec {command}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc
    assert len(lines) == 1 and lines[0].startswith("pyprobe: error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


def doctor_line(proc: subprocess.CompletedProcess, what: str) -> str:
    return next(line for line in proc.stdout.splitlines() if line[5:].startswith(what))


def test_tracefs_unmounted_is_mounted_again():
    proc = private(
        UNMOUNT_TRACEFS, "tcpstates", "-d", "0.3", env={"PYPROBE_DISABLE_HOOKS": "raw_tracepoint"}
    )
    assert proc.returncode == 0, proc.stderr
    assert "via tracepoint:sock:inet_sock_set_state" in proc.stderr


def test_tracefs_unmounted_for_good_raw_tracepoints_need_none():
    drops = private(UNMOUNT_TRACEFS, "drops", "0.3", "1", wrap=NO_MOUNTING)
    assert drops.returncode == 0 and "via tp_btf:kfree_skb" in drops.stderr, drops
    # vector names from the kernel's own order when the format file is gone
    softirqs = private(UNMOUNT_TRACEFS, "softirqs", "-j", "0.3", "1", wrap=NO_MOUNTING)
    assert softirqs.returncode == 0 and '"vector":"TIMER"' in softirqs.stdout, softirqs
    # the tracepoint fallback alone cannot run: one line, and why
    only_tp = private(
        UNMOUNT_TRACEFS,
        "tcpstates",
        "-d",
        "0.3",
        wrap=NO_MOUNTING,
        env={"PYPROBE_DISABLE_HOOKS": "raw_tracepoint"},
    )
    one_line_error(only_tp, "tcpstates", "tracefs not mounted", "mount -t tracefs")
    doctor = private(UNMOUNT_TRACEFS, "doctor", wrap=NO_MOUNTING)
    assert doctor_line(doctor, "tracefs").startswith("[!!]")
    assert "mount -t tracefs tracefs /sys/kernel/tracing" in doctor_line(doctor, "tracefs")


def test_headers_hidden():
    hide = "mount -t tmpfs tmpfs /lib/modules"
    for args in (["tcpstates", "-d", "0.3"], ["drops", "0.3", "1"], ["export", "--probe", "napi"]):
        one_line_error(private(hide, *args), "no kernel headers", "make setup")
    doctor = private(hide, "doctor")
    assert doctor.returncode == 2
    assert doctor_line(doctor, "headers").startswith("[!!]") and "make setup" in doctor.stdout
    assert "no probe can load until this is fixed" in doctor.stdout


def test_btf_hidden():
    hide = "mount -t tmpfs tmpfs /sys/kernel/btf"
    # tcpstates falls back to the tracepoint, whose fields need no offsets
    proc = private(hide, "tcpstates", "-d", "0.3")
    assert proc.returncode == 0 and "via tracepoint:sock:inet_sock_set_state" in proc.stderr
    # netdev's hooks read struct net_device: no BTF, headers for another
    # kernel; its default needs no hook (the devices' own counters)
    one_line_error(
        private(hide, "netdev", "-F", "sizes", "0.3", "1"),
        "netdev",
        "needs struct offsets",
        "pyprobe doctor",
    )
    assert private(hide, "netdev", "0.3", "1").returncode == 0
    doctor = private(hide, "doctor")
    assert doctor.returncode == 0  # some probes still run
    assert doctor_line(doctor, "BTF").startswith("[!!]")
    assert "install linux-headers-" in doctor_line(doctor, "headers")
    assert "softirqs: uses kernel counters" in doctor.stdout
    assert "netdev: uses kernel counters" in doctor.stdout
    assert "tp_btf:net_dev_xmit" in doctor.stdout  # its features' hooks, each judged


def test_a_tracepoint_missing():
    # simulated: the hook disabled, as if this kernel lacked the tracepoint
    proc = private(
        "true",
        "tcpstates",
        "-d",
        "0.3",
        env={"PYPROBE_DISABLE_HOOKS": "raw_tracepoint:inet_sock_set_state"},
    )
    assert proc.returncode == 0 and "via tracepoint:sock:inet_sock_set_state" in proc.stderr
    none_left = {"PYPROBE_DISABLE_HOOKS": "raw_tracepoint:napi_poll,tracepoint:napi:napi_poll"}
    one_line_error(private("true", "napi", "0.3", "1", env=none_left), "napi: no usable hook")
    doctor = private("true", "doctor", env=none_left)
    assert "napi: UNAVAILABLE" in doctor.stdout
    assert "disabled by PYPROBE_DISABLE_HOOKS" in doctor.stdout
