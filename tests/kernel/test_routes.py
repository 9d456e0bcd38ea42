"""routes: packets with no route equal the namespace's own counters, and the
failed lookups (the `lookups` feature) one per connect() or sendto() that
failed, each by the table and route type that refused it."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from pyprobe.lab.pair import VethPair
from pyprobe.netns import snapshot
from tests.kernel.test_probeset import rows, sh, snmp
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]

N = 7
# A connect() and a sendto() to each destination: the errno each must get.
SENDER = """
import errno, socket, sys
for addr, want in zip(sys.argv[1::2], sys.argv[2::2]):
    for _ in range({n}):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET, kind)
            try:
                s.connect((addr, 80)) if kind == socket.SOCK_STREAM else s.sendto(b"x", (addr, 80))
            except OSError as e:
                assert e.errno == getattr(errno, want), (addr, e)
            else:
                raise AssertionError(addr + ": no error")
            s.close()
"""
# destination -> (route put in front of it, errno, the lookup's result)
CASES = {
    "10.99.0.7": ("", "ENETUNREACH", "no_route"),
    "10.98.0.7": ("unreachable 10.98.0.0/24", "EHOSTUNREACH", "unreachable"),
    "10.97.0.7": ("prohibit 10.97.0.0/24", "EACCES", "prohibit"),
    "10.96.0.7": ("blackhole 10.96.0.0/24", "EINVAL", "blackhole"),
}


@pytest.fixture
def pair():
    with VethPair(prefix=f"rt{time.monotonic_ns() % 100000}", net=81) as p:
        yield p


def test_no_routes_equal_the_namespaces_counters_and_lookups_name_the_route(pair, env):
    for route, _, _ in CASES.values():
        if route:
            sh(pair.a, f"ip route add {route}")
    probe = registry.create("routes", env=env, features=["lookups"])
    with probe:
        probe.attach()
        before = snmp(pair.path(pair.a), "Ip")["OutNoRoutes"]
        args = [x for addr, (_, err, _) in CASES.items() for x in (addr, err)]
        subprocess.run(
            ["ip", "netns", "exec", pair.a, sys.executable, "-c", SENDER.format(n=N), *args],
            check=True,
        )
        counted = snmp(pair.path(pair.a), "Ip")["OutNoRoutes"]
        snapshot.expire()  # (a pass an earlier test took, before this pair, is not ours)
        no_routes = {
            (r["netns"], r["family"]): r["value"] for r in rows(probe, "route_out_no_routes_total")
        }
        failed = {
            (r["netns"], r["table"], r["result"], r["destination"]): r["value"]
            for r in rows(probe, "route_lookups_failed_total")
        }
    ns_a = str(pair.inode(pair.a))
    # the kernel counts only "Network is unreachable" (no route at all)
    assert counted - before == 2 * N
    assert no_routes[(ns_a, "IPv4")] == counted
    mine = {k[1:]: v for k, v in failed.items() if k[0] == ns_a}
    assert mine == {
        ("main", result, addr.rsplit(".", 1)[0] + ".0/24"): 2 * N
        for addr, (_, _, result) in CASES.items()
    }


def test_without_the_feature_no_program_is_loaded(env):
    probe = registry.create("routes", env=env, features=())
    with probe:
        probe.attach()
        assert probe.hook is None and probe.hook_label == "kernel counters"
        assert rows(probe, "route_out_no_routes_total")
        assert not rows(probe, "route_lookups_failed_total")
