"""`pyprobe lab scenario NAME`: the failures of the networking notes, each
built on a lab topology, broken on purpose, driven with a little traffic,
and named from what pyprobe's probes saw — the verdict an engineer would
reach with `ip neigh`, `ip route get`, `ss -lnt`, `bridge link` and nstat,
in one line.

  neighbour   h1 sends to an address nobody has on its link
  no-route    h1's route to its link is deleted: connects fail
  closed-port h1 connects to a port nobody listens on in h2
  backlog     a listener that never accepts, backlog 1, gets 8 SYNs
  enslaved-ip an address left on a bridge's port: its neighbours never resolve
  stp-loop    a loop on the bridge (a veth with both ends in br0): STP
              blocks one end, frames arriving there are dropped

Each verdict reads only the probes' rows and events (the evidence): with
the signal removed, there is no verdict (the tests check both).
"""

from __future__ import annotations

import functools
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..netns import rtnl
from ..netns.namespaces import run_in_netns
from ..views import evidence
from ..views.evidence import Evidence
from . import topology, traffic

H1, H2 = "10.231.1.1", "10.231.1.2"
ABSENT = "10.231.1.77"  # on h1's link, nobody's
CLOSED_PORT, BACKLOG_PORT = 8083, 8084
ENSLAVED_ADDR = "10.231.2.254"  # left on a bridge's port


@dataclass(frozen=True)
class Scenario:
    name: str
    topology: str
    help: str
    probes: dict[str, tuple[str, ...]]  # probe -> its features
    streams: tuple[str, ...]
    breaks: Callable[[], None]
    drive: Callable[[], None]
    verdict: Callable[[Evidence], str | None]
    stp: bool = False


def _ns(short: str) -> Path:
    return topology.ns_path(short)


def _sysctl(short: str, **values: str) -> None:
    def write() -> None:
        for key, value in values.items():
            Path("/proc/sys/net", *key.split(".")).write_text(value)

    run_in_netns(_ns(short), write)


def _text(cause: evidence.Cause | None) -> str | None:
    return None if cause is None else cause.text


def _nothing() -> None:
    return None


# -- neighbour ------------------------------------------------------------------------
def _neighbour_break() -> None:
    # two probes 100 ms apart, then FAILED: a verdict in a second, not in three
    _sysctl(
        "h1", **{"ipv4.neigh.eth0.retrans_time_ms": "100", "ipv4.neigh.eth0.mcast_solicit": "2"}
    )


def _neighbour_drive() -> None:
    traffic.udp_blast(_ns("h1"), ABSENT, 9, 3)
    time.sleep(0.6)


def _neighbour_verdict(ev: Evidence) -> str | None:
    return _text(evidence.neighbour_failed(ev, topology.ns_name("h1")))


# -- no-route -------------------------------------------------------------------------
def _no_route_break() -> None:
    def delete() -> None:
        with rtnl.iproute() as ipr:
            # the connected route the address made (proto kernel, scope link)
            idx = ipr.link_lookup(ifname="eth0")[0]
            ipr.route("del", dst="10.231.1.0/24", oif=idx, scope=253, proto=2)

    run_in_netns(_ns("h1"), delete)


def _failed_connects(short: str, addr: str, port: int, n: int) -> None:
    def run() -> None:
        for _ in range(n):
            with socket.socket() as s:
                s.settimeout(2)
                s.connect_ex((addr, port))

    run_in_netns(_ns(short), run)


def _no_route_verdict(ev: Evidence) -> str | None:
    return _text(evidence.no_route(ev, topology.ns_name("h1")))


# -- closed-port ----------------------------------------------------------------------
def _closed_port_verdict(ev: Evidence) -> str | None:
    return _text(evidence.refused(ev, CLOSED_PORT, topology.ns_name("h2")))


# -- backlog --------------------------------------------------------------------------
_LISTENERS: list[traffic.Listener] = []


def _backlog_break() -> None:
    _LISTENERS.append(traffic.Listener(_ns("h2"), H2, BACKLOG_PORT, backlog=1, accept=False))


def _syns(short: str, addr: str, port: int, n: int) -> None:
    """n connects at once, not waiting for them (a burst of SYNs)."""

    def run() -> None:
        socks = []
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((addr, port))
            socks.append(s)
        time.sleep(0.5)
        for s in socks:
            s.close()

    run_in_netns(_ns(short), run)


def _backlog_verdict(ev: Evidence) -> str | None:
    return _text(evidence.accept_queue_full(ev, topology.ns_name("h2"), H2, BACKLOG_PORT))


def _stop_listeners() -> None:
    while _LISTENERS:
        _LISTENERS.pop().stop()


# -- stp-loop -------------------------------------------------------------------------
def _loop_break() -> None:
    """A veth with both ends in br0: a loop STP must cut by blocking one end."""

    def build() -> None:
        with rtnl.iproute() as ipr:
            ipr.link("add", ifname="loopa", kind="veth", peer={"ifname": "loopb"})
            br = ipr.link_lookup(ifname="br0")[0]
            for name in ("loopa", "loopb"):
                idx = ipr.link_lookup(ifname=name)[0]
                ipr.link("set", index=idx, master=br)
                ipr.link("set", index=idx, state="up")

    run_in_netns(_ns("sw"), build)
    # listening, then learning: forward_delay each, before STP settles
    time.sleep(2 * topology.STP_FORWARD_DELAY_CS / 100 + 1.0)


def _loop_drive() -> None:
    run_in_netns(_ns("h1"), functools.partial(_arp_flood, "10.231.2.2"))


def _arp_flood(addr: str) -> None:
    """A few datagrams to h2: each ARP request a broadcast the bridge floods
    to every port, the loop's two ends included."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(3):
            s.sendto(b"x", (addr, 9))
            time.sleep(0.1)


def _loop_verdict(ev: Evidence) -> str | None:
    return _text(evidence.stp_blocks(ev, topology.ns_name("sw")))


# -- enslaved-ip ----------------------------------------------------------------------
def _enslaved_break() -> None:
    """An address left on port1 after it joined br0 (the notes' mistake)."""

    def address() -> None:
        with rtnl.iproute() as ipr:
            idx = ipr.link_lookup(ifname="port1")[0]
            ipr.addr("add", index=idx, address=ENSLAVED_ADDR, prefixlen=24)

    run_in_netns(_ns("sw"), address)
    _sysctl(
        "sw", **{"ipv4.neigh.port1.retrans_time_ms": "100", "ipv4.neigh.port1.mcast_solicit": "2"}
    )


def _enslaved_drive() -> None:
    traffic.udp_blast(_ns("sw"), "10.231.2.2", 9, 2)
    time.sleep(0.6)


def _enslaved_verdict(ev: Evidence) -> str | None:
    return _text(evidence.enslaved_address(ev, topology.ns_name("sw")))


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "neighbour",
            "veth",
            "h1 sends to an address nobody has on its link",
            {"neigh": (), "drops": ()},
            ("neigh",),
            _neighbour_break,
            _neighbour_drive,
            _neighbour_verdict,
        ),
        Scenario(
            "no-route",
            "veth",
            "h1's route to its own link deleted: its connects fail",
            {"routes": ("lookups",)},
            (),
            _no_route_break,
            functools.partial(_failed_connects, "h1", H2, 8080, 3),
            _no_route_verdict,
        ),
        Scenario(
            "closed-port",
            "veth",
            f"h1 connects to port {CLOSED_PORT} of h2, where nobody listens",
            {"drops": (), "tcpretrans": ()},
            ("drops",),
            _nothing,
            functools.partial(_failed_connects, "h1", H2, CLOSED_PORT, 3),
            _closed_port_verdict,
        ),
        Scenario(
            "backlog",
            "veth",
            f"a listener on h2:{BACKLOG_PORT} that never accepts (backlog 1) gets 8 SYNs at once",
            {"queues": ()},
            (),
            _backlog_break,
            functools.partial(_syns, "h1", H2, BACKLOG_PORT, 8),
            _backlog_verdict,
        ),
        Scenario(
            "enslaved-ip",
            "bridge",
            f"sw keeps {ENSLAVED_ADDR} on port1, a port of br0, and sends to h2",
            {"neigh": ()},
            ("neigh",),
            _enslaved_break,
            _enslaved_drive,
            _enslaved_verdict,
        ),
        Scenario(
            "stp-loop",
            "bridge",
            "a loop on br0 (a veth with both ends in it): STP blocks one end",
            {"drops": ()},
            (),
            _loop_break,
            _loop_drive,
            _loop_verdict,
            stp=True,
        ),
    )
}


def names() -> Iterable[str]:
    return SCENARIOS.keys()


def cleanup() -> None:
    """What a scenario left running besides the lab (its servers)."""
    _stop_listeners()
