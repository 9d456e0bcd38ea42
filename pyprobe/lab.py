"""Network namespaces for the demo and the tests, built with pyroute2.

A VethPair is two namespaces joined by a veth pair on a private /24 that
routes nowhere else. Traffic runs in threads that entered a namespace
(setns affects only the calling thread). Everything is removed on exit.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .netlink import NETNS_RUN_DIR, inode_of
from .netlink import start_in_netns as in_netns

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

    def path(self, ns: str) -> Path:
        return NETNS_RUN_DIR / ns

    def inode(self, ns: str) -> int:
        return inode_of(self.path(ns))

    def up(self) -> VethPair:
        from pyroute2 import IPRoute, NetNS, netns

        try:
            netns.create(self.a)
            netns.create(self.b)
            va, vb = f"{self.prefix}a"[:15], f"{self.prefix}b"[:15]
            with IPRoute() as ipr:
                ipr.link("add", ifname=va, kind="veth", peer={"ifname": vb, "net_ns_fd": self.b})
                ipr.link("set", index=ipr.link_lookup(ifname=va)[0], net_ns_fd=self.a)
            for ns, dev, addr in ((self.a, va, self.addr_a), (self.b, vb, self.addr_b)):
                with NetNS(ns) as n:
                    idx = n.link_lookup(ifname=dev)[0]
                    n.addr("add", index=idx, address=addr, prefixlen=24)
                    n.link("set", index=idx, state="up")
                    n.link("set", index=n.link_lookup(ifname="lo")[0], state="up")
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        from pyroute2 import netns

        for ns in (self.a, self.b):
            if self.path(ns).exists():
                netns.remove(ns)  # the veth ends go with their namespaces

    def __enter__(self) -> VethPair:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


class Server:
    """A TCP server in a namespace. close_first="server" closes after replying
    (the server side ends in TIME_WAIT); "client" waits for the client's FIN."""

    def __init__(self, ns_path: str | Path, addr: str, port: int, close_first: str = "client"):
        self.addr, self.port, self.close_first = addr, port, close_first
        self.accepted = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = in_netns(ns_path, self._run, name=f"server:{port}")
        if not self._ready.wait(5):
            raise RuntimeError(f"server on {addr}:{port} did not start: {self._error}")

    def _run(self) -> None:
        try:
            srv = socket.socket(socket.AF_INET6 if ":" in self.addr else socket.AF_INET)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind((self.addr, self.port))
            srv.listen(1024)
            srv.settimeout(0.05)
        except BaseException as e:
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        with srv:
            while not self._stop.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(5)
                    conn.recv(1)
                    conn.sendall(b"y")
                    if self.close_first == "client":
                        while conn.recv(64):
                            pass
                self.accepted += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def churn(ns_path: str | Path, addr: str, port: int, n: int, close_first: str = "client") -> int:
    """n request/response connections from a namespace; returns how many completed."""
    done = [0]

    def run() -> None:
        for _ in range(n):
            with socket.create_connection((addr, port), timeout=5) as c:
                c.sendall(b"x")
                c.recv(1)
                if close_first == "server":
                    while c.recv(64):
                        pass
            done[0] += 1

    in_netns(ns_path, run, name="churn").join()
    return done[0]


def refused(ns_path: str | Path, addr: str, port: int, n: int) -> int:
    """n connects to a closed port; returns how many were refused."""
    count = [0]

    def run() -> None:
        for _ in range(n):
            try:
                socket.create_connection((addr, port), timeout=5).close()
            except ConnectionRefusedError:
                count[0] += 1

    in_netns(ns_path, run, name="refused").join()
    return count[0]
