"""Attribution to cgroups (what a container or pod is, to the kernel): two
cgroups made here, a client in one and a server in the other, each in its own
network namespace (as two containers are), and what the kernel counts in each
namespace compared with the series and events labelled with each cgroup.

The drops and retransmits happen in softirq, on behalf of whatever task the
CPU was running: the socket's cgroup (sk_cgrp_data) names the right one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyprobe.kernel import cgroups
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from tests.support import PYPROBE, Exporter, get, registry

pytestmark = [
    pytest.mark.root,
    pytest.mark.kernel,
    pytest.mark.skipif(not cgroups.available(), reason="no cgroup v2 hierarchy mounted"),
]

SERVER = """
import socket, sys
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # overflows: never read
udp.bind(("{addr}", 7900))
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("{addr}", 7800))
srv.listen()
print("ready", flush=True)
conn, _ = srv.accept()
while conn.recv(65536):
    pass
conn.close()
sys.stdin.read()  # until the test is done with the UDP socket
"""

CLIENT = """
import socket
c = socket.create_connection(("{addr}", 7800), timeout=10)
c.sendall(b"r" * 2_000_000)
c.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(300):
    u.sendto(b"u" * 1000, ("{addr}", 7900))
print("sent", flush=True)
"""


def snmp(ns_path: str, proto: str) -> dict[str, int]:
    def read() -> dict[str, int]:
        text = Path("/proc/thread-self/net/snmp").read_text()
        lines = [ln.split() for ln in text.splitlines() if ln.startswith(f"{proto}:")]
        return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True))

    return namespaces.run_in_netns(ns_path, read)


def in_cgroup(ns: str, cgroup: Path, code: str) -> subprocess.Popen:
    """A Python process in namespace ns and in cgroup (entered first: `ip
    netns exec` mounts a sysfs of the namespace's own, without the cgroups)."""
    return subprocess.Popen(
        ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$@"', "sh",
         "ip", "netns", "exec", ns, sys.executable, "-c", code],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.fixture
def two_cgroups() -> Iterator[tuple[Path, Path, Path]]:
    """root/a and root/b under the cgroup v2 hierarchy; removed after (their
    processes killed first)."""
    top = cgroups.v2_root() / f"pyprobe-test-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    a, b = top / "a", top / "b"
    for d in (top, a, b):
        d.mkdir()
    try:
        yield top, a, b
    finally:
        for d in (a, b):
            for pid in (d / "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
        deadline = time.monotonic() + 5
        for d in (a, b, top):
            while True:
                try:
                    d.rmdir()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)


def total(text: str, name: str, **labels: str) -> float:
    """The sum of a family's samples that have these label values."""
    out = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            out += float(line.rsplit(" ", 1)[1])
    return out


def test_softirq_drops_and_retransmits_name_the_sockets_cgroup(env, two_cgroups):
    top, cg_a, cg_b = two_cgroups
    path_a, path_b = (f"/{top.name}/a", f"/{top.name}/b")
    with VethPair(prefix=f"cg{time.monotonic_ns() % 100000}", net=78) as pair:
        subprocess.run(
            ["ip", "netns", "exec", pair.b, "nft",
             "add table inet loss; add chain inet loss in { type filter hook input priority 0; };"
             " add rule inet loss in tcp dport 7800 numgen random mod 100 lt 10 drop"],
            check=True,
        )  # fmt: skip
        subprocess.run(
            ["ip", "netns", "exec", pair.a, "ethtool", "-K", pair.dev_a, "tso", "off"], check=True
        )
        ns_a = pair.inode(pair.a)
        exporter = Exporter(
            "--label", "cgroup", "--probe", "drops", "--probe", "tcpretrans",
            "--probe", "tcpstates",
        )  # fmt: skip
        streams = {n: registry.create(n, env=env) for n in ("drops", "tcpretrans")}
        server = None
        try:
            for probe in streams.values():
                probe.attach(stream=True)
            before = {
                ns: {p: snmp(pair.path(ns), p) for p in ("Tcp", "Udp")} for ns in (pair.a, pair.b)
            }
            server = in_cgroup(pair.b, cg_b, SERVER.format(addr=pair.addr_b))
            assert server.stdout.readline().strip() == "ready", server.stderr.read()
            client = in_cgroup(pair.a, cg_a, CLIENT.format(addr=pair.addr_b))
            out, err = client.communicate(timeout=60)
            assert out.strip() == "sent", err
            # retransmits (a lost FIN) can follow on a timer: read once settled
            deadline = time.monotonic() + 10
            while True:
                time.sleep(0.3)
                after = {
                    ns: {p: snmp(pair.path(ns), p) for p in ("Tcp", "Udp")}
                    for ns in (pair.a, pair.b)
                }
                again = {
                    ns: {p: snmp(pair.path(ns), p) for p in ("Tcp", "Udp")}
                    for ns in (pair.a, pair.b)
                }
                if after == again or time.monotonic() > deadline:
                    break
            status, text = get(exporter.url())
            events = {n: p.events(500) for n, p in streams.items()}
        finally:
            for probe in streams.values():
                probe.detach()
            exporter.stop()
            if server is not None:
                server.kill()
                server.wait()

    def delta(ns: str, proto: str, field: str) -> int:
        return after[ns][proto][field] - before[ns][proto][field]

    assert status == 200
    # Each namespace's sockets are all in one cgroup: its counts are the cgroup's.
    retrans_a = delta(pair.a, "Tcp", "RetransSegs")
    assert retrans_a > 0
    assert total(text, "pyprobe_tcp_retransmit_segments_total", cgroup=path_a) == retrans_a
    assert total(text, "pyprobe_tcp_retransmit_segments_total", cgroup=path_b) == delta(
        pair.b, "Tcp", "RetransSegs"
    )
    # The UDP drops happen in the veth's receive softirq, run by the sender
    # (cgroup a): the receiving socket's cgroup is b's.
    rcvbuf_b = delta(pair.b, "Udp", "RcvbufErrors")
    assert rcvbuf_b > 0
    drops_b = total(text, "pyprobe_drops_total", cgroup=path_b, reason="SOCKET_RCVBUFF")
    assert drops_b == rcvbuf_b
    assert total(text, "pyprobe_drops_total", cgroup=path_a, reason="SOCKET_RCVBUFF") == 0
    # Connections opened and accepted, by the cgroup of the socket.
    changes = "pyprobe_tcp_state_transitions_total"
    opened = total(text, changes, cgroup=path_a, old_state="CLOSE", new_state="SYN_SENT")
    accepted = total(text, changes, cgroup=path_b, old_state="LISTEN", new_state="SYN_RECV")
    assert opened == delta(pair.a, "Tcp", "ActiveOpens") == 1
    assert accepted == delta(pair.b, "Tcp", "PassiveOpens") == 1
    # The streams say the same, event by event.
    udp = [e for e in events["drops"] if e["reason"] == "SOCKET_RCVBUFF"]
    assert len(udp) == rcvbuf_b
    assert {(e["cgroup_path"], e["container"], e["pod"]) for e in udp} == {(path_b, "", "")}
    sent = [e for e in events["tcpretrans"] if e["kind"] == "retransmit" and e["netns"] == ns_a]
    assert sum(e["segs"] for e in sent) == retrans_a
    assert {e["cgroup_path"] for e in sent} == {path_a}
    assert {e["cgroup"] for e in sent} == {cg_a.stat().st_ino}


def test_cgroup_filter_keeps_that_cgroup_and_below(two_cgroups):
    """`--cgroup PARENT` keeps the sockets of the cgroups below it too (a
    container's, a pod's containers); what is outside it is filtered in the
    program. Loopback connections: 2 from a (below top), 3 from outside."""
    top, cg_a, _ = two_cgroups
    conn = (
        "import socket\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()\n"
        "for _ in range({n}):\n"
        "    c = socket.create_connection(s.getsockname()); a, _ = s.accept()\n"
        "    c.close(); a.close()\n"
    )
    proc = subprocess.Popen(
        [PYPROBE, "tcpstates", "-j", "--cgroup", f"/{top.name}", "-d", "4"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline()
        assert line.startswith("Tracing"), line + proc.stderr.read()
        subprocess.run([sys.executable, "-c", conn.format(n=3)], check=True)
        subprocess.run(
            ["sh", "-c", f'echo $$ > {cg_a}/cgroup.procs && exec {sys.executable} -c "$1"',
             "sh", conn.format(n=2)],
            check=True,
        )  # fmt: skip
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    import json

    events = [json.loads(x) for x in out.splitlines()]
    opened = [e for e in events if e["newstate"] == "SYN_SENT"]
    assert len(opened) == 2, err
    assert {e["cgroup"] for e in events} == {cg_a.stat().st_ino}


def test_bad_cgroup_and_container_are_one_line_errors():
    for args, text in (
        (["drops", "--cgroup", "/no/such/cgroup"], "--cgroup /no/such/cgroup: no such cgroup"),
        (["tcpretrans", "--container", "0123abcd"], "--container 0123abcd: no running"),
        (["tcpstates", "--container", "abc"], "give 4 or more hex digits"),
        (["tcplife", "--cgroup", "/", "--container", "abcd"], "one or the other"),
    ):
        proc = subprocess.run([PYPROBE, *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (args, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], (args, proc.stderr)


@pytest.mark.parametrize("name", ["drops", "tcpretrans", "tcpstates"])
@pytest.mark.parametrize("stream", [False, True])
def test_cgroup_feature_and_filter_pass_the_verifier_on_every_hook(name, stream, env):
    """-F cgroup (the keys by cgroup) and --cgroup (the ancestor walk) on each
    hook variant this kernel has: tp_btf's typed pointers refuse what the
    helper reads of the others allow, so each is checked."""
    import dataclasses

    from pyprobe.core.hooks import usable_points
    from pyprobe.load import bcc

    probe = registry.create(name, env=env, features=["cgroup"])
    probe.cgroup_filter = 12345
    choice = probe.available()
    flags = probe.cflags(choice, stream=stream)
    assert "-DFEATURE_CGROUP" in flags and "-DFILTER_CGROUP=12345ull" in flags
    assert not [f for f in flags if f.startswith("-DFRONT_")]  # the keys are 16 bytes
    checked = 0
    for verdict in choice.verdicts:
        if verdict.hook.kind == "kprobe" or not verdict.usable:
            continue
        points = usable_points(verdict.hook, env, stream=stream)
        bcc.verify(probe.manifest.program, dataclasses.replace(verdict.hook, points=points), flags)
        checked += 1
    assert checked >= 2
