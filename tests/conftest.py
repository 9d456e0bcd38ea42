import os
import shutil
import signal
import subprocess
import time

import pytest

from pyprobe.kernel.env import KernelEnv

# Every test compiles what it loads, daemons started as subprocesses too
# (they inherit this): a program kept from an earlier test or run must not
# stand in for the code under test. tests/kernel/test_objcache.py turns the
# cache on in a directory of its own.
os.environ["PYPROBE_PROGRAM_CACHE"] = "off"

# A runner that starts the suite in the background (`cmd &` without job
# control, nohup) hands it SIGINT ignored, and every command a test starts
# would inherit that: the tests that stop them with SIGINT would wait in
# vain. A handler here is reset to the default in each child at exec.
signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config, items):
    """Kernel/root tests need root: skipping them silently would hide a broken
    CI, so as non-root they are skipped with a reason that says so."""
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (make test runs as root)")
    for item in items:
        if "root" in item.keywords or "kernel" in item.keywords:
            item.add_marker(skip)


def bpf_prog_count() -> int:
    out = subprocess.run(["bpftool", "prog", "show"], capture_output=True, text=True, check=True)
    return sum(1 for line in out.stdout.splitlines() if line[:1].isdigit())


def settled_prog_count(expected: int, within: float = 1.0) -> int:
    """The program count once it reaches expected, or after `within` seconds.
    The kernel frees a detached program after an RCU grace period, not at close()."""
    deadline = time.monotonic() + within
    while (n := bpf_prog_count()) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return n


def quiet_prog_count(within: float = 2.0) -> int:
    """The program count once programs detached by an earlier test are freed
    (unchanged for 100 ms): a baseline that later frees cannot undercut."""
    deadline = time.monotonic() + within
    last = bpf_prog_count()
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = bpf_prog_count()
        if now == last:
            return now
        last = now
    return last


# Switches that change which hook every later probe picks: a module that
# sets one and leaves it set silently moves the rest of the run to other hooks
# (tests/vm/test_kprobe_path.py did: the tcpstates tests after it, run in the
# same process, got the kprobe fallback). Each module must leave them as found.
HOOK_SWITCHES = ("PYPROBE_DISABLE_HOOKS",)


@pytest.fixture(autouse=True, scope="module")
def hook_switches_restored(request):
    before = {k: os.environ.get(k) for k in HOOK_SWITCHES}
    yield
    after = {k: os.environ.get(k) for k in HOOK_SWITCHES}
    if after != before:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        pytest.fail(f"{request.module.__name__} left {after} (found {before}): restored")


@pytest.fixture
def env() -> KernelEnv:
    return KernelEnv.detect()


@pytest.fixture
def no_programs_left():
    """Assert the test leaves the kernel with as many BPF programs as it found."""
    if not shutil.which("bpftool"):
        pytest.fail("bpftool missing: run make setup")
    before = quiet_prog_count()
    yield
    assert settled_prog_count(before) == before
