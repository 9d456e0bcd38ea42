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
  vxlan-mtu   the VXLAN MTU black hole: the hosts' MTU raised to the
              underlay's (no room for the 50 bytes of encapsulation) and
              h1 drops ICMP fragmentation needed (a firewall): big
              segments vanish, small ones pass
  conntrack-full  rt's conntrack table full: the host's nf_conntrack_max
              lowered to 64 for the scenario (only when no namespace holds
              more than half of that: the limit is the host's, each
              namespace's count is its own; put back at the end and by
              `lab down`), 64 TCP connections through rt fill it, and new
              flows (UDP datagrams h1 -> h2) are dropped

Each verdict reads only the probes' rows and events (the evidence): with
the signal removed, there is no verdict (the tests check both).
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import struct
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import PyprobeError
from ..netns import rtnl
from ..netns.namespaces import each_netns, netns_label, run_in_netns
from ..views import evidence
from ..views.evidence import Evidence
from . import topology, traffic

H1, H2 = "10.231.1.1", "10.231.1.2"
ABSENT = "10.231.1.77"  # on h1's link, nobody's
CLOSED_PORT, BACKLOG_PORT = 8083, 8084
ENSLAVED_ADDR = "10.231.2.254"  # left on a bridge's port
VX_H2, MTU_PORT = "10.231.4.2", 8085
# h1's firewall drops the ICMP that would tell it the path's MTU (the
# field's black hole: ICMP filtered on the way back); the table goes with h1
ICMP_FILTER = """
table ip pyprobe_lab_icmp {
  chain input {
    type filter hook input priority filter; policy accept;
    icmp type destination-unreachable icmp code frag-needed counter drop
  }
}
"""


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


# -- vxlan-mtu ------------------------------------------------------------------------
def _nft(short: str, rules: str) -> None:
    def load() -> None:
        subprocess.run(["nft", "-f", "-"], input=rules, text=True, check=True,
                       capture_output=True)  # fmt: skip

    run_in_netns(_ns(short), load)


def _mtu_break() -> None:
    """The hosts' MTU 1500, the underlay's: a full-size frame plus VXLAN's 50
    bytes does not fit. The vxlan device answers such a DF packet with an
    ICMP fragmentation needed of its own, which h1's firewall drops."""

    def raise_mtu() -> None:
        with rtnl.iproute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="eth0")[0], mtu=1500)

    for short in ("h1", "h2"):
        run_in_netns(_ns(short), raise_mtu)
    _nft("h1", ICMP_FILTER)
    # a sink that accepts and never reads: the kernel acknowledges what fits
    _LISTENERS.append(traffic.Listener(_ns("h2"), VX_H2, MTU_PORT, read=False))


def _big_write(addr: str, port: int, nbytes: int, wait: float) -> None:
    """Connect (small segments: they pass), write nbytes at once (full-size
    segments: they vanish), give TCP `wait` seconds to retransmit, then reset
    (a close would leave the data retransmitting after us)."""
    with socket.create_connection((addr, port), timeout=2) as s:
        s.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # what the buffer takes is enough
            s.send(b"m" * nbytes)
        time.sleep(wait)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def _mtu_drive() -> None:
    run_in_netns(_ns("h1"), functools.partial(_big_write, VX_H2, MTU_PORT, 65536, 1.5))


def _mtu_verdict(ev: Evidence) -> str | None:
    return _text(evidence.mtu_black_hole(ev, topology.ns_name("h1")))


# -- conntrack-full -------------------------------------------------------------------
CT_LIMIT = 64  # the host's nf_conntrack_max while the scenario runs
CT_COUNT = Path("/proc/sys/net/netfilter/nf_conntrack_count")  # the reader's namespace's
NAT_H2, CT_PORT, CT_FLOWS = "10.231.6.2", 8086, 16
_CT_RESTORE: list[int] = []
_CLIENTS: list[socket.socket] = []


def _ct_count() -> int:
    try:
        return int(CT_COUNT.read_text())
    except FileNotFoundError:  # no conntrack in this namespace (nor module)
        return 0


def _ct_counts() -> dict[int, int]:
    """Every namespace's conntrack count (inode -> entries), this process's
    (the host's) included; PyprobeError when one cannot be entered."""
    denied: list[str] = []
    counts = each_netns(_ct_count, denied=denied)
    if denied:
        raise PyprobeError(f"conntrack-full: {denied[0]} cannot be entered: its count unknown")
    return counts


def _lower_conntrack_max() -> None:
    """nf_conntrack_max to CT_LIMIT, the old value kept to be put back. The
    limit is the host's but each namespace compares its own count with it:
    refused when any namespace holds more than half the new limit (its
    connections would be dropped too)."""
    busy = {ns: n for ns, n in _ct_counts().items() if n > CT_LIMIT // 2}
    if busy:
        ns, n = max(busy.items(), key=lambda kv: kv[1])
        raise PyprobeError(
            f"conntrack-full: {netns_label(ns)} tracks {n} connections: lowering the host's "
            f"nf_conntrack_max to {CT_LIMIT} would drop its new ones; not run"
        )
    if not os.access(topology.CONNTRACK_MAX, os.W_OK):  # read-only but in the host's
        raise PyprobeError("conntrack-full: nf_conntrack_max is read-only in this namespace")
    old = int(topology.CONNTRACK_MAX.read_text())
    if old <= CT_LIMIT:
        raise PyprobeError(f"conntrack-full: nf_conntrack_max is {old} already; not run")
    topology.remember("conntrack_max", old)  # `lab down` puts it back should we not
    _CT_RESTORE.append(old)
    topology.CONNTRACK_MAX.write_text(str(CT_LIMIT))


def _restore_conntrack_max() -> None:
    while _CT_RESTORE:
        topology.restore_conntrack_max(_CT_RESTORE.pop())


def _ct_full_break() -> None:
    """rt's table filled: CT_LIMIT TCP connections from h1 to a sink on h2,
    through rt's masquerade. Established, so assured: neither early drop
    nor conntrack's garbage collector evicts them to make room."""
    _LISTENERS.append(traffic.Listener(_ns("h2"), NAT_H2, CT_PORT, read=False))
    _lower_conntrack_max()
    _CLIENTS.extend(traffic.connect_only(_ns("h1"), NAT_H2, CT_PORT, CT_LIMIT))


def _new_flows(addr: str, port: int, n: int) -> None:
    """n new UDP flows (one datagram each, from n source ports)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(n)]
    try:
        for s in socks:
            s.sendto(b"f", (addr, port))
    finally:
        for s in socks:
            s.close()


def _ct_full_drive() -> None:
    run_in_netns(_ns("h1"), functools.partial(_new_flows, NAT_H2, 9, CT_FLOWS))


def _ct_full_verdict(ev: Evidence) -> str | None:
    return _text(evidence.conntrack_full(ev, topology.ns_name("rt")))


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
        Scenario(
            "vxlan-mtu",
            "vxlan",
            "the hosts' MTU raised to the underlay's, and h1 drops ICMP fragmentation needed: "
            f"h1 writes 64 KB to h2:{MTU_PORT}",
            {"drops": (), "tcpretrans": ()},
            ("drops", "tcpretrans"),
            _mtu_break,
            _mtu_drive,
            _mtu_verdict,
        ),
        Scenario(
            "conntrack-full",
            "nat",
            f"nf_conntrack_max lowered to {CT_LIMIT}, {CT_LIMIT} connections through rt fill its "
            f"table, then {CT_FLOWS} new UDP flows from h1 to h2",
            {"conntrack": (), "drops": ()},
            (),
            _ct_full_break,
            _ct_full_drive,
            _ct_full_verdict,
        ),
    )
}


def names() -> Iterable[str]:
    return SCENARIOS.keys()


def cleanup() -> None:
    """What a scenario left besides the lab: its clients and servers, and the
    host's conntrack limit (put back first: it is the host's)."""
    _restore_conntrack_max()
    while _CLIENTS:
        _CLIENTS.pop().close()
    _stop_listeners()
