"""Two namespaces joined by a veth pair, for the demo and the tests, built
with netlink.

A VethPair is two namespaces joined by a veth pair on a private /24 that
routes nowhere else. Traffic runs in threads that entered a namespace
(setns affects only the calling thread). Everything is removed on exit.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..netns import rtnl
from ..netns.namespaces import NETNS_RUN_DIR, inode_of, run_in_netns

SUBNET = "10.231.{}.{}"


@dataclass
class VethPair:
    """Namespaces <prefix>-a and <prefix>-b, addresses 10.231.N.1 and 10.231.N.2."""

    prefix: str = field(default_factory=lambda: f"pp{os.getpid()}")
    net: int = 0

    @property
    def a(self) -> str:
        return f"{self.prefix}-a"

    @property
    def b(self) -> str:
        return f"{self.prefix}-b"

    @property
    def addr_a(self) -> str:
        return SUBNET.format(self.net, 1)

    @property
    def addr_b(self) -> str:
        return SUBNET.format(self.net, 2)

    @property
    def dev_a(self) -> str:
        return f"{self.prefix}a"[:15]

    @property
    def dev_b(self) -> str:
        return f"{self.prefix}b"[:15]

    def path(self, ns: str) -> Path:
        return NETNS_RUN_DIR / ns

    def inode(self, ns: str) -> int:
        return inode_of(self.path(ns))

    def up(self) -> VethPair:
        try:
            rtnl.create_netns(self.a)
            rtnl.create_netns(self.b)
            va, vb = self.dev_a, self.dev_b
            with rtnl.iproute() as ipr:
                ipr.link("add", ifname=va, kind="veth", peer={"ifname": vb, "net_ns_fd": self.b})
                ipr.link("set", index=ipr.link_lookup(ifname=va)[0], net_ns_fd=self.a)
            for ns, dev, addr in ((self.a, va, self.addr_a), (self.b, vb, self.addr_b)):
                run_in_netns(self.path(ns), functools.partial(_configure, dev, addr))
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        for ns in (self.a, self.b):
            if self.path(ns).exists():
                rtnl.remove_netns(ns)  # the veth ends go with their namespaces

    def __enter__(self) -> VethPair:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def _configure(dev: str, addr: str) -> None:
    """Inside the namespace (a thread that entered it; no forked helper):
    no IPv6 on the veth — no router solicitations or DAD arriving at random
    times in the middle of exact packet counts — then the address, then up."""
    Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1")
    with rtnl.iproute() as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        ipr.addr("add", index=idx, address=addr, prefixlen=24)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
