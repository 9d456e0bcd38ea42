"""`pyprobe lab`: the topologies of the Linux networking notes, built in
network namespaces with pyroute2 (no `ip` commands), on private addresses
that route nowhere else, and torn down completely.

  veth    h1 <-veth-> h2                                   10.231.1.0/24
  bridge  h1, h2, h3 -> br0 in sw (STP on or off)          10.231.2.0/24
  vxlan   h1 -> br0+vxlan42 in sw1 <-underlay veth-> sw2 -> h2
          overlay 10.231.4.0/24, underlay 10.231.3.0/30, UDP 4789
  tun     h1 <-veth-> h2 (10.231.8.0/24), and a tunnel over it: tun0 in each
          (10.231.9.0/24), relayed as UDP 4000 by a user-space process
          (lab/tunrelay.py): what TUN is, a device whose wire is a program
  tap     the same at layer 2: tap0 in each (10.231.10.0/24), Ethernet
          frames relayed (ARP crosses it too); underlay 10.231.8.0/24
  nat     h1 (inside, 10.231.5.1) <-> rt <-> h2 (outside, 10.231.6.2)
          rt masquerades what leaves by wan (dynamic NAT with ports: PAT)
          and forwards its TCP port 8080 to h1:80 (DNAT, a port forward)

Options: --loss PCT drops PCT% of h2's incoming IPv4 packets at random, with
an eBPF tc classifier (netem and tc's gact are not in every kernel; cls_bpf
is); --delay MS needs netem; --rate RATE puts a tbf on h1's egress. The description of what is up
is kept in /run/pyprobe-lab.json for `status` and `traffic`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import PyprobeError
from ..netns import devices, rtnl
from ..netns.namespaces import NETNS_RUN_DIR, run_in_netns
from . import impair, tunrelay

PREFIX = "pplab"
STATE = Path("/run/pyprobe-lab.json")
TOPOLOGIES = ("veth", "bridge", "vxlan", "nat", "tun", "tap")
RELAY_PID = Path("/run/pyprobe-lab-relay.pid")
VNI, VXLAN_PORT = 42, 4789
STP_FORWARD_DELAY_CS = 200  # centiseconds
T = TypeVar("T")


def ns_name(short: str) -> str:
    return f"{PREFIX}-{short}"


def ns_path(short: str) -> Path:
    return NETNS_RUN_DIR / ns_name(short)


def _in(short: str, fn: Callable[[], T]) -> T:
    return run_in_netns(ns_path(short), fn)


def _ipr() -> Any:
    return rtnl.iproute()


def _veth(a_ns: str, a_dev: str, b_ns: str, b_dev: str) -> None:
    """A veth pair created straight into two namespaces (names are per namespace:
    both ends may be called eth0 while the host has its own)."""
    with _ipr() as ipr:
        ipr.link(
            "add",
            ifname=a_dev,
            kind="veth",
            net_ns_fd=ns_name(a_ns),
            peer={"ifname": b_dev, "net_ns_fd": ns_name(b_ns)},
        )


def _configure(
    dev: str,
    addr: str | None,
    prefixlen: int = 24,
    master: str | None = None,
    mtu: int | None = None,
) -> None:
    """Inside a namespace: no IPv6 noise, address, master, MTU, up (and lo up)."""
    Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1")
    with _ipr() as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        if addr:
            ipr.addr("add", index=idx, address=addr, prefixlen=prefixlen)
        if master:
            ipr.link("set", index=idx, master=ipr.link_lookup(ifname=master)[0])
        if mtu:
            ipr.link("set", index=idx, mtu=mtu)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


def _bridge(name: str, stp: bool) -> None:
    with _ipr() as ipr:
        # With STP, ports listen then learn for forward_delay each (2 s here,
        # the minimum) before they forward; Lab.up waits for that.
        ipr.link(
            "add",
            ifname=name,
            kind="bridge",
            br_stp_state=1 if stp else 0,
            br_forward_delay=STP_FORWARD_DELAY_CS if stp else 0,
        )
        Path(f"/proc/sys/net/ipv6/conf/{name}/disable_ipv6").write_text("1")
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


class Lab:
    def __init__(
        self,
        topology: str = "veth",
        stp: bool = False,
        loss: float = 0.0,
        delay_ms: float = 0.0,
        rate: str | None = None,
    ) -> None:
        if topology not in TOPOLOGIES:
            raise PyprobeError(f"unknown topology {topology!r}: one of {', '.join(TOPOLOGIES)}")
        if not 0 <= loss < 100 or 0 < loss < 0.0001:
            raise PyprobeError(f"--loss {loss}: a percentage from 0.0001 to 100 (or 0)")
        if delay_ms < 0:
            raise PyprobeError(f"--delay {delay_ms}: milliseconds, 0 or more")
        if rate is not None:
            impair.check_rate(rate)
        self.topology, self.stp, self.loss, self.delay_ms, self.rate = (
            topology,
            stp,
            loss,
            delay_ms,
            rate,
        )
        self.namespaces: list[str] = []
        self.hosts: dict[str, dict[str, str]] = {}

    # -- building ---------------------------------------------------------------
    def _ns(self, short: str) -> None:
        if ns_path(short).exists():
            raise PyprobeError(f"namespace {ns_name(short)} exists: `pyprobe lab down` first")
        rtnl.create_netns(ns_name(short))
        self.namespaces.append(short)

    def _host(self, short: str, dev: str, addr: str, mtu: int | None = None) -> None:
        _in(short, functools.partial(_configure, dev, addr, 24, None, mtu))
        self.hosts[short] = {"netns": ns_name(short), "dev": dev, "addr": addr}

    def up(self) -> Lab:
        if active() is not None:
            raise PyprobeError("a lab is already up: `pyprobe lab down` first")
        try:
            getattr(self, f"_up_{self.topology}")()
            self._impairments()
            if self.stp and self.topology != "veth":
                time.sleep(2 * STP_FORWARD_DELAY_CS / 100 + 0.5)  # listening + learning
            self._save()
        except BaseException:
            self.down()
            raise
        return self

    def _up_veth(self) -> None:
        self._ns("h1")
        self._ns("h2")
        _veth("h1", "eth0", "h2", "eth0")
        self._host("h1", "eth0", "10.231.1.1")
        self._host("h2", "eth0", "10.231.1.2")

    def _up_bridge(self) -> None:
        self._ns("sw")
        _in("sw", functools.partial(_bridge, "br0", self.stp))
        for n in (1, 2, 3):
            self._ns(f"h{n}")
            _veth(f"h{n}", "eth0", "sw", f"port{n}")
            _in("sw", functools.partial(_configure, f"port{n}", None, 24, "br0"))
            self._host(f"h{n}", "eth0", f"10.231.2.{n}")

    def _up_vxlan(self) -> None:
        self._ns("sw1")
        self._ns("sw2")
        _veth("sw1", "underlay", "sw2", "underlay")
        for n, local, remote in ((1, "10.231.3.1", "10.231.3.2"), (2, "10.231.3.2", "10.231.3.1")):
            sw = f"sw{n}"
            _in(sw, functools.partial(_configure, "underlay", local, 30))
            _in(sw, functools.partial(_bridge, "br0", self.stp))
            _in(sw, functools.partial(_vxlan, local, remote))
            self._ns(f"h{n}")
            _veth(f"h{n}", "eth0", sw, "port")
            _in(sw, functools.partial(_configure, "port", None, 24, "br0"))
            # 50 bytes of VXLAN encapsulation must fit the underlay's 1500
            self._host(f"h{n}", "eth0", f"10.231.4.{n}", mtu=1450)

    def _up_nat(self) -> None:
        self._ns("rt")
        for n, side, net in ((1, "lan", 5), (2, "wan", 6)):
            self._ns(f"h{n}")
            _veth(f"h{n}", "eth0", "rt", side)
            _in("rt", functools.partial(_configure, side, f"10.231.{net}.254", 24))
            self._host(f"h{n}", "eth0", f"10.231.{net}.{n}")
        # h1 reaches the outside through rt; h2 needs no route back: what
        # it sees comes from rt's own address (masquerade).
        _in("h1", functools.partial(_default_route, NAT_ROUTER_LAN))
        _in("rt", _nat_router)
        self.hosts["rt"] = {"netns": ns_name("rt"), "dev": "wan", "addr": NAT_ROUTER_WAN}

    def _up_tun(self) -> None:
        self._relayed("tun", 9)

    def _up_tap(self) -> None:
        self._relayed("tap", 10)

    def _relayed(self, mode: str, net: int) -> None:
        """h1 and h2 over a veth, and a tunnel between their tun0 or tap0
        (10.231.NET.0/24) that a user-space relay carries over it as UDP."""
        self._ns("h1")
        self._ns("h2")
        _veth("h1", "eth0", "h2", "eth0")
        for n in (1, 2):
            _in(f"h{n}", functools.partial(_tuntap, mode, f"10.231.{net}.{n}"))
            self._host(f"h{n}", "eth0", f"10.231.8.{n}")
        # the tunnel's ends: the hosts' tun0/tap0 addresses are what h1 and h2 use
        ends = [f"{ns_name(f'h{n}')}:10.231.8.{n}:10.231.8.{3 - n}" for n in (1, 2)]
        relay = subprocess.Popen(
            [sys.executable, "-m", "pyprobe.lab.tunrelay", mode, *ends],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # not in the terminal's group: Ctrl-C there leaves it
        )
        RELAY_PID.write_text(str(relay.pid))
        assert relay.stdout is not None
        said, _, _ = select.select([relay.stdout], [], [], 10)
        if not said or relay.stdout.readline().strip() != "ready":
            relay.kill()
            relay.wait()
            raise PyprobeError(
                f"the {mode} lab's relay did not start ({tunrelay.device(mode)} or UDP port "
                f"{tunrelay.PORT})"
            )
        for n in (1, 2):
            self.hosts[f"h{n}"][mode] = f"10.231.{net}.{n}"

    def _impairments(self) -> None:
        h1, h2 = self.hosts["h1"]["dev"], self.hosts["h2"]["dev"]
        if self.loss:
            _in("h2", functools.partial(impair.loss_filter, h2, self.loss))
        if self.delay_ms:
            _in("h1", functools.partial(impair.netem_delay, h1, self.delay_ms))
        if self.rate:
            _in("h1", functools.partial(impair.tbf, h1, self.rate))

    def _save(self) -> None:
        STATE.write_text(
            json.dumps(
                {
                    "topology": self.topology,
                    "stp": self.stp,
                    "loss": self.loss,
                    "delay_ms": self.delay_ms,
                    "rate": self.rate,
                    "namespaces": [ns_name(n) for n in self.namespaces],
                    "hosts": self.hosts,
                },
                indent=2,
            )
        )

    def down(self) -> None:
        down()

    def __enter__(self) -> Lab:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def _vxlan(local: str, remote: str) -> None:
    with _ipr() as ipr:
        ipr.link(
            "add",
            ifname=f"vxlan{VNI}",
            kind="vxlan",
            vxlan_id=VNI,
            vxlan_local=local,
            vxlan_group=remote,
            vxlan_port=VXLAN_PORT,
            vxlan_learning=1,
        )
    _configure(f"vxlan{VNI}", None, 24, "br0")


NAT_ROUTER_LAN, NAT_ROUTER_WAN = "10.231.5.254", "10.231.6.254"
NAT_FORWARD_PORT, NAT_INSIDE_PORT = 8080, 80
# The notes' NAT, in nftables (iptables' successor; its kernel side is in
# every distribution kernel): the table is the lab's, removed with rt.
NAT_RULES = f"""
table ip pyprobe_lab_nat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    iifname "wan" tcp dport {NAT_FORWARD_PORT} dnat to 10.231.5.1:{NAT_INSIDE_PORT}
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "wan" masquerade
  }}
}}
"""


# A frame must fit one UDP datagram on the underlay's 1500: its IP and UDP
# headers (28) and, for tap0, the frame's Ethernet header (14).
TAP_MTU = 1500 - 28 - 14


def _tuntap(mode: str, addr: str) -> None:
    """Inside a namespace: a persistent tun0 or tap0 (the relay opens it), up,
    addressed."""
    try:
        with _ipr() as ipr:
            ipr.link("add", ifname=tunrelay.device(mode), kind="tuntap", mode=mode)
    except Exception as e:  # no tun driver: pyroute2's NetlinkError
        raise PyprobeError(f"the {mode} topology needs the tun driver: {e}") from None
    _configure(tunrelay.device(mode), addr, mtu=TAP_MTU if mode == "tap" else None)


def _default_route(gateway: str) -> None:
    with _ipr() as ipr:
        ipr.route("add", dst="0.0.0.0/0", gateway=gateway)


def _nat_router() -> None:
    """Inside rt: forwarding on, and the NAT rules (nft reads them on stdin;
    its output is not parsed)."""
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    try:
        subprocess.run(["nft", "-f", "-"], input=NAT_RULES, text=True, check=True,
                       capture_output=True)  # fmt: skip
    except FileNotFoundError:
        raise PyprobeError("the nat topology needs nftables: apt-get install nftables") from None
    except subprocess.CalledProcessError as e:
        raise PyprobeError(f"nft refused the lab's NAT rules: {e.stderr.strip()}") from None


def active() -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return None
    return state


# The host's conntrack limit as a scenario found it (lab/scenarios.py
# conntrack-full lowers it for a while): kept in the lab's description so
# that `lab down` puts it back should the scenario not have.
# Written from this process's namespace: only the host's (the initial one)
# may write it, elsewhere it is read-only.
CONNTRACK_MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")


def remember(key: str, value: Any) -> None:
    """Add key to the saved description of the lab that is up."""
    state = active()
    if state is None:
        raise PyprobeError("no lab is up")
    state[key] = value
    STATE.write_text(json.dumps(state, indent=2))


def restore_conntrack_max(value: int) -> None:
    """Put the host's nf_conntrack_max back to value (and forget it)."""
    CONNTRACK_MAX.write_text(str(value))
    state = active()
    if state is not None and state.pop("conntrack_max", None) is not None:
        STATE.write_text(json.dumps(state, indent=2))


def down() -> list[str]:
    """Remove every lab namespace (and so every device in them), and put back
    what a scenario changed on the host; idempotent."""
    removed = []
    state = active()
    if state is not None and "conntrack_max" in state:
        restore_conntrack_max(int(state["conntrack_max"]))
    _stop_relay()  # its sockets would keep the namespaces alive
    for entry in sorted(NETNS_RUN_DIR.glob(f"{PREFIX}-*")) if NETNS_RUN_DIR.is_dir() else ():
        rtnl.remove_netns(entry.name)
        removed.append(entry.name)
    STATE.unlink(missing_ok=True)
    return removed


def _stop_relay() -> None:
    try:
        pid = int(RELAY_PID.read_text())
    except (OSError, ValueError):
        return
    try:  # a stale file's pid may be another process's now: only ours is stopped
        ours = b"pyprobe.lab.tunrelay" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        ours = False
    with contextlib.suppress(ProcessLookupError):
        for sig in (signal.SIGTERM, signal.SIGKILL) if ours else ():
            os.kill(pid, sig)
            for _ in range(100):  # our child: reaped here; else init reaps it
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                os.kill(pid, 0)
                time.sleep(0.01)
    RELAY_PID.unlink(missing_ok=True)


def status() -> list[dict[str, Any]]:
    """Every lab namespace: its devices, their kind, state, addresses and master
    (the impairments are in the saved description, `active()`)."""
    out = []
    for entry in sorted(NETNS_RUN_DIR.glob(f"{PREFIX}-*")) if NETNS_RUN_DIR.is_dir() else ():

        def links() -> list[dict[str, Any]]:
            with _ipr() as ipr:
                addrs: dict[int, list[str]] = {}
                for a in ipr.get_addr():
                    addrs.setdefault(a["index"], []).append(
                        f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                    )
                names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
                return [
                    {
                        "dev": m.get_attr("IFLA_IFNAME"),
                        "kind": devices.link_kind(m),
                        "state": m.get_attr("IFLA_OPERSTATE"),
                        "master": names.get(m.get_attr("IFLA_MASTER") or 0, ""),
                        "addrs": addrs.get(m["index"], []),
                    }
                    for m in ipr.get_links()
                ]

        out.append({"netns": entry.name, "links": run_in_netns(entry, links)})
    return out
