"""`pyprobe lab` and `make demo`: the topologies carry traffic, the impairments
drop what they say (checked against the kernel's own UDP counters), and
nothing is left behind."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from pyprobe.lab import topology, traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from tests.conftest import quiet_prog_count, settled_prog_count
from tests.kernel.test_cli_kernel import PYPROBE
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def lab_namespaces() -> list[str]:
    return sorted(p.name for p in namespaces.NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*"))


@pytest.fixture(autouse=True)
def clean():
    topology.down()
    yield
    topology.down()
    assert lab_namespaces() == []


def links(ns: str) -> dict[str, dict]:
    return {
        link["dev"]: link
        for entry in topology.status()
        if entry["netns"] == topology.ns_name(ns)
        for link in entry["links"]
    }


@pytest.mark.parametrize(
    ("name", "stp"), [("veth", False), ("bridge", False), ("bridge", True), ("vxlan", False)]
)
def test_each_topology_carries_tcp_and_is_what_it_says(name, stp, env):
    netdev = registry.create("netdev", env=env)
    with topology.Lab(name, stp=stp) as built, netdev:
        netdev.attach()
        h1, h2 = built.hosts["h1"], built.hosts["h2"]
        srv = traffic.Server(topology.ns_path("h2"), h2["addr"], 8080)
        try:
            assert traffic.churn(topology.ns_path("h1"), h2["addr"], 8080, 20) == 20
        finally:
            srv.stop()
        if name == "bridge":
            ports = links("sw")
            assert ports["br0"]["kind"] == "bridge"
            assert {ports[f"port{n}"]["master"] for n in (1, 2, 3)} == {"br0"}
            assert "h3" in built.hosts
        if name == "vxlan":
            for sw in ("sw1", "sw2"):
                vx = links(sw)[f"vxlan{topology.VNI}"]
                assert (vx["kind"], vx["master"]) == ("vxlan", "br0")
            carried = [
                r
                for r in netdev.rows()
                if r["metric"] == "netdev_transmit_packets_total"
                and r["device"] == f"vxlan{topology.VNI}"
                and r["netns_name"] == "pplab-sw1"
            ]
            assert carried and carried[0]["value"] > 20  # the TCP exchange, encapsulated
        assert h1["addr"] != h2["addr"]
    assert lab_namespaces() == []


def test_loss_drops_equal_what_udp_did_not_receive(env):
    """Every datagram is either dropped by the loss filter (TC_INGRESS) or read by
    the receiving socket: the two add up to what was sent, exactly."""
    import socket

    drops = registry.create("drops", env=env)
    with topology.Lab("veth", loss=20) as built, drops:
        drops.attach()
        h2 = built.hosts["h2"]
        held: list[socket.socket] = []

        def bind() -> None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            s.bind((h2["addr"], 9000))
            held.append(s)

        namespaces.run_in_netns(topology.ns_path("h2"), bind)
        traffic.udp_blast(topology.ns_path("h1"), h2["addr"], 9000, 2000)
        time.sleep(0.2)
        received = 0
        held[0].setblocking(False)
        try:
            while held[0].recv(2048):
                received += 1
        except BlockingIOError:
            pass
        held[0].close()
        ns_h2 = str(namespaces.inode_of(topology.ns_path("h2")))
        dropped = sum(
            r["value"] for r in drops.rows() if r["reason"] == "TC_INGRESS" and r["netns"] == ns_h2
        )
    assert dropped + received == 2000
    assert 250 <= dropped <= 550  # 20% of 2000, give or take


def test_firewall_workload_drops_exactly_what_it_sends(env):
    from pyprobe.lab import workloads

    drops = registry.create("drops", env=env)
    with topology.Lab("veth"), drops:
        drops.attach()
        line = workloads.firewall(workloads.Hosts.from_lab(), 77)
        ns_h2 = str(namespaces.inode_of(topology.ns_path("h2")))
        dropped = sum(
            r["value"] for r in drops.rows() if r["reason"] == "TC_INGRESS" and r["netns"] == ns_h2
        )
    assert "77 UDP datagrams" in line and dropped == 77


@pytest.mark.parametrize("run", ["compiled", "kept", "kept entry broken"])
def test_firewall_filter_is_kept_and_a_kept_one_drops_the_same(run, env, tmp_path, monkeypatch):
    """The lab's classifiers go through the program cache: the second use
    loads the kept instructions (no bcc module is made), and drops exactly
    what the compiled one does; an entry the kernel refuses is dropped and
    the filter compiled again."""
    import bcc

    from pyprobe.lab import workloads

    cache = tmp_path / "programs"
    monkeypatch.setenv("PYPROBE_PROGRAM_CACHE", str(cache))
    if run != "compiled":
        with topology.Lab("veth"):
            workloads.firewall(workloads.Hosts.from_lab(), 1)  # compiles, keeps
        (entry,) = cache.glob("*.json")
        if run == "kept entry broken":
            spec = json.loads(entry.read_text())
            spec["insns"] = "lQAAAAAAAAA="  # a lone exit: the verifier refuses it
            entry.write_text(json.dumps(spec))
    made = []

    class Counted(bcc.BPF):  # type: ignore[misc, name-defined]
        def __init__(self, *args, **kwargs):
            if b"lab_filter" in kwargs.get("text", b""):
                made.append(1)  # the classifier compiled (not the drops probe)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(bcc, "BPF", Counted)
    drops = registry.create("drops", env=env)
    with topology.Lab("veth"), drops:
        drops.attach()
        workloads.firewall(workloads.Hosts.from_lab(), 33)
        ns_h2 = str(namespaces.inode_of(topology.ns_path("h2")))
        dropped = sum(
            r["value"] for r in drops.rows() if r["reason"] == "TC_INGRESS" and r["netns"] == ns_h2
        )
    assert dropped == 33
    assert len(made) == (0 if run == "kept" else 1)
    assert len(list(cache.glob("*.json"))) == 1  # kept (again)


def run_cli(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYPROBE, *args], capture_output=True, text=True, timeout=timeout)


def test_lab_cli_up_status_traffic_down():
    up = run_cli("lab", "up", "-t", "bridge", "--loss", "5")
    assert up.returncode == 0, up.stderr
    again = run_cli("lab", "up")
    assert again.returncode == 2 and "already up" in again.stderr
    status = json.loads(run_cli("lab", "status", "-j").stdout)
    assert status["lab"]["topology"] == "bridge"
    assert {ns["netns"] for ns in status["namespaces"]} == {
        "pplab-h1",
        "pplab-h2",
        "pplab-h3",
        "pplab-sw",
    }
    traffic = run_cli("lab", "traffic", "churn", "refused", "firewall", "--connections", "10")
    assert traffic.returncode == 0, traffic.stderr
    assert "churn: 10 connections" in traffic.stdout
    assert "refused: 10 connects" in traffic.stdout
    down = run_cli("lab", "down")
    assert down.returncode == 0 and "pplab-sw" in down.stdout
    assert lab_namespaces() == []
    assert run_cli("lab", "traffic").returncode == 2  # nothing up: one line, exit 2


def test_delay_without_netem_is_one_clear_line():
    proc = run_cli("lab", "up", "--delay", "50")
    if proc.returncode == 0:
        pytest.skip("this kernel has netem")
    assert proc.returncode == 2
    assert "needs netem" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert lab_namespaces() == []


def test_make_demo_runs_every_workload_and_leaves_nothing():
    before = quiet_prog_count()
    proc = run_cli("demo", timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for section in (
        "1. 40 connections",
        "2. A receiver that never reads",
        "3. 10 connects",
        "4. A firewall rule",
        "5. Interrupts vs polling",
        "8. One request across VXLAN, hop by hop",
        "pyprobe top",
        "6. VXLAN",
        "7. NAT",
        "Summary",
    ):
        assert section in out, section
    assert "TIME_WAIT on h1: 40" in out
    assert "NO_SOCKET drops: 10" in out and "firewall drops: 50" in out
    assert "lost events: 0" in out and "namespaces removed" in out
    # every packet h1 sent across was encapsulated once and carried on the underlay
    vx = re.search(r"VXLAN: (\d+) sent by h1, (\d+) encapsulated, (\d+) on the underlay", out)
    assert vx and int(vx[1]) == int(vx[2]) > 20 and int(vx[3]) >= int(vx[2]), out[-600:]
    assert "NAT mappings: 5" in out  # 3 through the port forward, 2 masqueraded
    # the request across VXLAN, to the server
    assert "traced packets: 0" not in out and "read by" in out and "(decapsulated)" in out
    assert lab_namespaces() == []
    assert settled_prog_count(before) == before


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
def test_traffic_fails_with_its_reason_not_a_thread_traceback():
    """A taken port, nobody listening, a namespace gone: the caller gets an
    OSError saying so (or, for a lab's churn, a count of failures) at once,
    where these were tracebacks in threads and a client left waiting."""
    with VethPair(prefix=f"ppf{os.getpid() % 10000}", net=86) as pair:
        first = traffic.Server(pair.path(pair.b), pair.addr_b, 9300)
        try:
            with pytest.raises(OSError, match=r"server on .*:9300 did not start: .*in use"):
                traffic.Server(pair.path(pair.b), pair.addr_b, 9300)
        finally:
            first.stop()
        failures: list[str] = []
        assert traffic.churn(pair.path(pair.a), pair.addr_b, 9301, 3, failures=failures) == 0
        assert failures == ["Connection refused"] * 3
        with pytest.raises(ConnectionRefusedError):
            traffic.churn(pair.path(pair.a), pair.addr_b, 9301, 3)
        gone = pair.path(pair.b)
    start = time.monotonic()
    with pytest.raises(OSError, match=r"listener on .*:9302 did not start: .*No such file"):
        traffic.Listener(gone, pair.addr_b, 9302)
    assert time.monotonic() - start < 1


def test_lab_traffic_says_which_workload_failed_and_why():
    assert run_cli("lab", "up").returncode == 0
    from pyroute2 import netns

    netns.remove(topology.ns_name("h2"))  # gone from under it
    start = time.monotonic()
    proc = run_cli("lab", "traffic", "churn", "bulk", "refused", "--connections", "3")
    assert time.monotonic() - start < 10
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("did not start") == 2  # churn's server, bulk's sink
    assert "churn: failed: server on" in proc.stderr and "bulk: failed: listener on" in proc.stderr
    assert "refused: 0 connects" in proc.stdout and "3 of 3 got no RST" in proc.stdout


def test_tun_lab_tunnels_each_packet_through_its_relay(env):
    """h1 pings h2's tun0 address: each echo leaves by h1's tun0 into the
    relay, crosses eth0 as one UDP datagram, and enters h2 by its tun0 — the
    devices' own counters (netdev) and h2's UdpInDatagrams agree."""
    n = 5
    netdev = registry.create("netdev", env=env)
    with topology.Lab("tun") as built, netdev:
        netdev.attach()
        assert links("h1")["tun0"]["kind"] == "tun"  # not tap: IFLA_TUN_TYPE says IFF_TUN

        def packets(ns: str, dev: str, way: str) -> float:
            return sum(
                r["value"]
                for r in netdev.rows()
                if r["metric"] == f"netdev_{way}_packets_total"
                and r["netns_name"] == topology.ns_name(ns)
                and r["device"] == dev
            )

        def udp_in() -> int:
            def read() -> int:
                lines = [
                    ln.split()
                    for ln in Path("/proc/thread-self/net/snmp").read_text().splitlines()
                    if ln.startswith("Udp:")
                ]
                return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))["InDatagrams"]

            return namespaces.run_in_netns(topology.ns_path("h2"), read)

        before = (packets("h1", "tun0", "transmit"), packets("h2", "tun0", "receive"), udp_in())
        out = subprocess.run(
            ["ip", "netns", "exec", topology.ns_name("h1"), "ping", "-c", str(n), "-i", "0.2",
             "-W", "2", built.hosts["h2"]["tun"]],
            capture_output=True, text=True,
        )  # fmt: skip
        assert f"{n} received" in out.stdout, out.stdout
        time.sleep(0.1)
        sent = packets("h1", "tun0", "transmit") - before[0]
        came = packets("h2", "tun0", "receive") - before[1]
        assert sent == came == udp_in() - before[2] == n
        pid = int(topology.RELAY_PID.read_text())
    assert not topology.RELAY_PID.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert lab_namespaces() == []


def snmp(ns: str, group: str, counter: str) -> int:
    """A host namespace's /proc/net/snmp counter (what nstat shows as GroupCounter)."""

    def read() -> int:
        lines = [
            ln.split()
            for ln in Path("/proc/thread-self/net/snmp").read_text().splitlines()
            if ln.startswith(f"{group}:")
        ]
        return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))[counter]

    return namespaces.run_in_netns(topology.ns_path(ns), read)


def tap_state(ns: str) -> dict:
    """tap0's MAC and counters and the namespace's neighbours on it, over netlink."""

    def read() -> dict:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="tap0")[0]
            link = ipr.get_links(idx)[0]
            return {
                "mac": link.get_attr("IFLA_ADDRESS"),
                "stats": dict(link.get_attr("IFLA_STATS64")),
                "neighbours": {
                    n.get_attr("NDA_DST"): n.get_attr("NDA_LLADDR")
                    for n in ipr.get_neighbours(ifindex=idx)
                },
            }

    return namespaces.run_in_netns(topology.ns_path(ns), read)


def test_tap_lab_relays_each_frame_arp_included_and_shows_kind_tap():
    """h1 pings h2's tap0 address. The first ping needs ARP: its request and
    reply cross the relay as frames too (2 datagrams each way, and h1 learns
    h2's tap0 MAC on tap0); after that, N pings are exactly N datagrams each
    way (each host's UdpIn/OutDatagrams, the tap0s' own counters)."""
    n = 5
    with topology.Lab("tap") as built:
        kinds = {ns: links(ns)["tap0"]["kind"] for ns in ("h1", "h2")}
        assert kinds == {"h1": "tap", "h2": "tap"}
        assert "eth0" in links("h1") and links("h1")["eth0"]["kind"] == "veth"
        status = run_cli("lab", "status")
        assert re.search(r"pplab-h1\s+tap0\s+tap\s", status.stdout), status.stdout

        def ping(count: int) -> None:
            out = subprocess.run(
                ["ip", "netns", "exec", topology.ns_name("h1"), "ping", "-c", str(count),
                 "-i", "0.2", "-W", "2", built.hosts["h2"]["tap"]],
                capture_output=True, text=True,
            )  # fmt: skip
            assert f"{count} received" in out.stdout, out.stdout

        def counters() -> tuple[int, ...]:
            return (
                snmp("h1", "Udp", "OutDatagrams"),
                snmp("h2", "Udp", "InDatagrams"),
                snmp("h2", "Udp", "OutDatagrams"),
                snmp("h1", "Udp", "InDatagrams"),
                tap_state("h1")["stats"]["tx_packets"],
                tap_state("h2")["stats"]["rx_packets"],
            )

        h1, h2 = tap_state("h1"), tap_state("h2")
        assert built.hosts["h2"]["tap"] not in h1["neighbours"]
        start = counters()
        ping(1)  # ARP request + echo request out, ARP reply + echo reply back
        time.sleep(0.1)
        first = counters()
        assert [b - a for a, b in zip(start, first, strict=True)] == [2] * 6
        assert tap_state("h1")["neighbours"][built.hosts["h2"]["tap"]] == h2["mac"]
        assert tap_state("h2")["neighbours"][built.hosts["h1"]["tap"]] == h1["mac"]

        ping(n)  # resolved: one frame per echo each way, nothing else
        time.sleep(0.1)
        assert [b - a for a, b in zip(first, counters(), strict=True)] == [n] * 6
        pid = int(topology.RELAY_PID.read_text())
    assert not topology.RELAY_PID.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert lab_namespaces() == []
