"""4. Things disappearing mid-run: interfaces, bridges, VXLAN devices and
whole namespaces deleted while the probes run. No crash, each error logged
once, stale series leave within a few scrapes, and a namespace inode or
ifindex the kernel hands out again is not confused with the old one."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import threading
import time

import pytest

from pyprobe.core.sources import SHARED_AGE
from pyprobe.netns import devices, namespaces
from tests.support import PYPROBE, Exporter, get

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def pyprobe(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYPROBE, *args], capture_output=True, text=True, timeout=timeout)


def netns_labels(text: str) -> set[str]:
    return set(re.findall(r'\bnetns="(\d+)"', text))


class Scraper(threading.Thread):
    def __init__(self, exporter: Exporter, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.exporter, self.every = exporter, every
        self.results: list[tuple[float, int, str]] = []  # (time, status, body)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            status, body = get(self.exporter.url())
            self.results.append((time.monotonic(), status, body))
            time.sleep(self.every)

    def stop(self) -> None:
        self.done.set()
        self.join()


def test_devices_and_namespaces_deleted_while_probes_run():
    pyprobe("lab", "down")
    exporter = Exporter()  # every probe
    watchers = [
        subprocess.Popen(
            [PYPROBE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for args in (["netdev", "0.3"], ["drops", "--stream", "-j"], ["top", "-i", "0.5"])
    ]
    scraper = Scraper(exporter)
    try:
        assert pyprobe("lab", "up", "-t", "vxlan").returncode == 0
        lab_inodes = {
            str(inode)
            for inode, name in namespaces.named_netns().items()
            if name.startswith("pplab-")
        }
        assert pyprobe("lab", "traffic", "churn", "bulk", "--connections", "30").returncode == 0
        text = get(exporter.url())[1]
        assert lab_inodes & netns_labels(text), "lab namespaces in the series before"
        scraper.start()
        for ns, dev in (("pplab-sw1", "vxlan42"), ("pplab-sw2", "br0"), ("pplab-h1", "eth0")):
            subprocess.run(["ip", "-n", ns, "link", "del", dev], check=True)
            time.sleep(0.5)
        assert pyprobe("lab", "down").returncode == 0
        gone_at = time.monotonic()
        deadline = gone_at + 15
        while time.monotonic() < deadline:
            if scraper.results and not lab_inodes & netns_labels(scraper.results[-1][2]):
                break
            time.sleep(0.25)
        time.sleep(1)
        scraper.stop()
        after = [r for r in scraper.results if r[0] > gone_at]
        left = next((i for i, r in enumerate(after) if not lab_inodes & netns_labels(r[2])), None)
        print(
            f"series of the deleted namespaces left after {left} scrapes "
            f"({len(scraper.results)} scrapes in all)"
        )
        assert all(status == 200 for _, status, _ in scraper.results)
        assert left is not None and left <= 8
        assert not any(lab_inodes & netns_labels(r[2]) for r in after[left:])
        assert exporter.proc.poll() is None
        for w in watchers:
            assert w.poll() is None, w.stderr.read()
    finally:
        scraper.done.set()
        for w in watchers:
            w.send_signal(signal.SIGINT)
        outcomes = [(w.wait(10), w.stderr.read()) for w in watchers]
        pyprobe("lab", "down")
        assert exporter.stop()[0] == 0
    for code, err in outcomes:
        assert code in (0, 130) and "Traceback" not in err, err
    problems = [  # without the time stamp (a repeat comes a few ms later)
        line.split(" ", 1)[1]
        for line in exporter.log
        if " level=error " in line or " level=warn " in line
    ]
    assert len(problems) == len(set(problems)), "an error logged more than once"
    assert "Traceback" not in "".join(exporter.log)


def veth_between(a: str, b: str, dev: str) -> None:
    subprocess.run(["ip", "netns", "add", a], check=True)
    subprocess.run(["ip", "netns", "add", b], check=True)
    for ns in (a, b):  # no IPv6 router/MLD chatter, so the counts stay exactly ours
        subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
            check=True,
        )
    subprocess.run(
        ["ip", "-n", a, "link", "add", dev, "type", "veth", "peer", dev, "netns", b], check=True
    )
    for ns, addr in ((a, "10.231.77.1/24"), (b, "10.231.77.2/24")):
        subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", dev], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)


def blast(ns: str, n: int) -> None:
    def send() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(n):
                s.sendto(b"x" * 64, ("10.231.77.2", 9))

    namespaces.run_in_netns(namespaces.NETNS_RUN_DIR / ns, send)


def transmitted(text: str, inode: int, device: str) -> float | None:
    for line in text.splitlines():
        if (
            line.startswith("pyprobe_netdev_transmit_packets_total{")
            and f'netns="{inode}"' in line
            and f'device="{device}"' in line
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_a_reused_namespace_inode_and_ifindex_start_from_zero():
    exporter = Exporter("--probe", "netdev")
    names = ("pfr-a", "pfr-b", "pfr-c", "pfr-d")
    try:
        veth_between("pfr-a", "pfr-b", "old0")
        old_inode = namespaces.inode_of(namespaces.NETNS_RUN_DIR / "pfr-a")
        old_ifindex = devices.links(namespaces.NETNS_RUN_DIR / "pfr-a")
        blast("pfr-a", 500)
        time.sleep(SHARED_AGE + 0.1)  # a pass through the namespaces taken since
        old_count = transmitted(get(exporter.url())[1], old_inode, "old0")
        assert old_count >= 500
        for ns in ("pfr-a", "pfr-b"):
            subprocess.run(["ip", "netns", "del", ns], check=True)
        time.sleep(0.5)  # the kernel frees the namespaces, and their inodes
        veth_between("pfr-c", "pfr-d", "new0")
        new_inode = namespaces.inode_of(namespaces.NETNS_RUN_DIR / "pfr-c")
        new_ifindex = devices.links(namespaces.NETNS_RUN_DIR / "pfr-c")
        blast("pfr-c", 20)
        stats = devices.link_stats(namespaces.NETNS_RUN_DIR / "pfr-c")["new0"]
        time.sleep(SHARED_AGE + 0.1)
        text = get(exporter.url())[1]
        print(f"old netns {old_inode} {old_ifindex}, new netns {new_inode} {new_ifindex}")
        if new_inode != old_inode:
            pytest.skip("the kernel did not hand the inode out again this time")
        assert old_ifindex.keys() == new_ifindex.keys()  # the same ifindexes, too
        assert transmitted(text, new_inode, "new0") == stats["tx_packets"]
        # the old device may linger (a view up to a second old) until pruned,
        # but with its own count, never the new one's; it may have sent a
        # packet of its own (ARP) after the first scrape, never the new 20
        lingering = transmitted(text, new_inode, "old0")
        assert lingering is None or old_count <= lingering < old_count + 20
        for _ in range(10):
            if transmitted(get(exporter.url())[1], new_inode, "old0") is None:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("the old device's series never left")
    finally:
        for ns in names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        assert exporter.stop()[0] == 0
