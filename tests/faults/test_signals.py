"""5. Signals: start/SIGTERM cycles (during start-up and while serving),
SIGKILL, and SIGHUP cycles alternating good and bad configs. Nothing stays
attached or pinned; descriptors and programs do not pile up."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import bpf_prog_count, quiet_prog_count, settled_prog_count
from tests.faults.conftest import fd_count
from tests.support import PYPROBE, Exporter, first_line, free_port, get, lines_until, sample

pytestmark = [pytest.mark.root, pytest.mark.kernel]
CORE = ("--probe", "tcpstates", "--probe", "drops", "--probe", "softirqs")


def bpf_link_count() -> int:
    out = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True, check=True)
    return sum(1 for line in out.stdout.splitlines() if line[:1].isdigit())


def pinned() -> set[str]:
    root = Path("/sys/fs/bpf")
    return {str(p) for p in root.rglob("*")} if root.is_dir() else set()


def start_until(marker: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [PYPROBE, "export", "--web.listen-address", f"127.0.0.1:{free_port()}", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = lines_until(proc, proc.stderr, lambda line: marker in line, what=marker)
    if log and marker in log[-1]:
        return proc
    raise AssertionError("exporter ended early:\n" + "".join(log))


def test_20_sigterm_cycles_during_startup_and_serving():
    before, links, pins = quiet_prog_count(), bpf_link_count(), pinned()
    took = []
    for cycle in range(20):
        # even cycles: as soon as the first probe is attached (others still
        # compiling); odd cycles: once it serves
        marker = 'msg="probe attached"' if cycle % 2 == 0 else "msg=listening "
        proc = start_until(marker, *CORE)
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(5)
        finally:
            proc.kill()
        took.append(time.monotonic() - start)
        proc.stderr.close()
        assert code == 0, (cycle, code)
        assert settled_prog_count(before) == before, cycle
    print(f"SIGTERM to exit: max {max(took):.2f}s over 20 cycles")
    assert max(took) < 2.0
    assert bpf_link_count() == links and pinned() == pins


def test_sigkill_leaves_nothing_behind():
    before, links, pins = quiet_prog_count(), bpf_link_count(), pinned()
    exporter = Exporter()  # every probe
    attached_progs, attached_links = bpf_prog_count(), bpf_link_count()
    assert attached_progs > before
    exporter.proc.kill()
    exporter.proc.wait(5)
    start = time.monotonic()
    assert settled_prog_count(before, within=1.0) == before
    while bpf_link_count() != links and time.monotonic() - start < 1.0:
        time.sleep(0.02)
    print(
        f"programs {before} -> {attached_progs} -> back in {time.monotonic() - start:.2f}s; "
        f"links {links} -> {attached_links}"
    )
    assert bpf_link_count() == links
    assert pinned() == pins


def test_sigkill_of_a_stream_leaves_nothing_behind():
    before = quiet_prog_count()
    proc = subprocess.Popen(
        [PYPROBE, "drops", "--stream"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    assert first_line(proc, proc.stderr, what="Tracing").startswith("Tracing")
    proc.kill()
    proc.wait(5)
    assert settled_prog_count(before, within=1.0) == before


def config(path: Path, user: str | None) -> None:
    import bcrypt

    if user is None:
        path.write_text("basic_auth_users: [this is: not valid")
        return
    hashed = bcrypt.hashpw(b"pw-" + user.encode(), bcrypt.gensalt(4)).decode()
    path.write_text(yaml.safe_dump({"basic_auth_users": {user: hashed}}))


def test_50_sighup_cycles_alternating_good_and_bad_configs(tmp_path):
    cfg = tmp_path / "web.yml"
    config(cfg, "user0")
    exporter = Exporter("--probe", "softirqs", "--web.config.file", str(cfg))
    pid = exporter.proc.pid
    try:
        assert get(exporter.url(), ("user0", "pw-user0"))[0] == 200
        fds, progs = fd_count(pid), bpf_prog_count()
        current = "user0"
        for cycle in range(1, 51):
            good = cycle % 2 == 0
            user = f"user{cycle}"
            config(cfg, user if good else None)
            exporter.proc.send_signal(signal.SIGHUP)
            # the reload happens within the daemon's 0.5 s wait
            deadline = time.monotonic() + 3
            expected = 1 if good else 0
            while time.monotonic() < deadline:
                auth = (user, f"pw-{user}") if good else (current, f"pw-{current}")
                status, text = get(exporter.url(), auth)
                if status == 200 and sample(text, "pyprobe_config_last_reload_successful") == (
                    expected
                ):
                    break
                time.sleep(0.05)
            assert status == 200, cycle
            assert sample(text, "pyprobe_config_last_reload_successful") == expected, cycle
            if good:
                assert get(exporter.url(), (current, f"pw-{current}"))[0] == 401
                current = user
            assert exporter.proc.poll() is None
        print(f"fds {fds} -> {fd_count(pid)}, programs {progs} -> {bpf_prog_count()}")
        assert fd_count(pid) <= fds + 2  # a keep-alive socket or two in flight
        assert bpf_prog_count() == progs
        reloads = [line for line in exporter.log if "reload" in line]
        assert sum("config reload failed" in line for line in reloads) == 25
    finally:
        assert exporter.stop()[0] == 0
    assert os.path.exists(cfg)
