"""7. Least privilege: the daemon drops to an unprivileged user with no
effective capabilities once attached, and its counters stay exact; a user
without CAP_BPF/CAP_PERFMON gets one clear line."""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from pyprobe.core.sources import SHARED_AGE
from pyprobe.exporter.privileges import effective_capabilities
from pyprobe.netns import devices, namespaces
from tests.conftest import quiet_prog_count, settled_prog_count
from tests.support import PYPROBE, Exporter, get, sample

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status") as f:
        return next(line.split(":", 1)[1].split() for line in f if line.startswith(name + ":"))[0]


def test_dropped_daemon_serves_exact_counters(pair):
    before = quiet_prog_count()
    exporter = Exporter("--drop-privileges", "nobody", "--probe", "netdev", "--probe", "tcpstates")
    pid = exporter.proc.pid
    try:
        assert status_field(pid, "Uid") == "65534" and status_field(pid, "Gid") == "65534"
        assert effective_capabilities(str(pid)) == 0
        assert status_field(pid, "CapPrm") == "0000000000000000"
        assert any('msg="privileges dropped"' in line for line in exporter.log)

        inode_a = pair.inode(pair.a)
        stats = lambda: devices.link_stats(pair.path(pair.a))[pair.dev_a]  # noqa: E731
        text = get(exporter.url())[1]
        labels = {"netns": str(inode_a), "device": pair.dev_a}
        tx0 = sample(text, "pyprobe_netdev_transmit_packets_total", **labels) or 0
        kernel0 = stats()["tx_packets"]

        def blast() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                for _ in range(300):
                    s.sendto(b"x" * 100, (pair.addr_b, 9))

        namespaces.run_in_netns(pair.path(pair.a), blast)
        # the devices' counters come from one pass through the namespaces that
        # the collectors of scrapes less than 0.5 s apart share (SHARED_AGE)
        time.sleep(SHARED_AGE + 0.1)
        status, text = get(exporter.url())
        assert status == 200
        tx1 = sample(text, "pyprobe_netdev_transmit_packets_total", **labels)
        assert tx1 - tx0 == stats()["tx_packets"] - kernel0 >= 300
        assert sample(text, "pyprobe_scrape_collector_success", collector="netdev") == 1
        assert sample(text, "pyprobe_scrape_collector_success", collector="tcpstates") == 1
    finally:
        code, _ = exporter.stop()
    assert code == 0
    assert settled_prog_count(before) == before


@pytest.mark.parametrize(
    "args",
    [["tcpstates"], ["drops", "1", "1"], ["export", "--web.listen-address", "127.0.0.1:19990"]],
)
def test_a_user_without_cap_bpf_gets_one_line(args):
    proc = subprocess.run(
        ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", PYPROBE, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc
    assert len(lines) == 1 and "CAP_BPF" in lines[0] and "Traceback" not in proc.stderr, lines
