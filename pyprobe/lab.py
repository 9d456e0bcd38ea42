"""Network namespaces for the demo and the tests, built with pyroute2.

A VethPair is two namespaces joined by a veth pair on a private /24 that
routes nowhere else. Traffic runs in threads that entered a namespace
(setns affects only the calling thread). Everything is removed on exit.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .netlink import NETNS_RUN_DIR, inode_of, run_in_netns
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
        from pyroute2 import IPRoute, netns

        try:
            netns.create(self.a)
            netns.create(self.b)
            va, vb = self.dev_a, self.dev_b
            with IPRoute() as ipr:
                ipr.link("add", ifname=va, kind="veth", peer={"ifname": vb, "net_ns_fd": self.b})
                ipr.link("set", index=ipr.link_lookup(ifname=va)[0], net_ns_fd=self.a)
            for ns, dev, addr in ((self.a, va, self.addr_a), (self.b, vb, self.addr_b)):
                run_in_netns(self.path(ns), functools.partial(_configure, dev, addr))
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


def _configure(dev: str, addr: str) -> None:
    """Inside the namespace (a thread that entered it; no forked helper):
    no IPv6 on the veth — no router solicitations or DAD arriving at random
    times in the middle of exact packet counts — then the address, then up."""
    from pyroute2 import IPRoute

    Path(f"/proc/sys/net/ipv6/conf/{dev}/disable_ipv6").write_text("1")
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        ipr.addr("add", index=idx, address=addr, prefixlen=24)
        ipr.link("set", index=idx, state="up")
        ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")


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


def udp_blast(ns_path: str | Path, addr: str, port: int, n: int, size: int = 100) -> int:
    """n datagrams of size bytes from a namespace; returns how many were sent."""
    sent = [0]

    def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(n):
                s.sendto(b"u" * size, (addr, port))
                sent[0] += 1

    in_netns(ns_path, run, name="udp").join()
    return sent[0]


class Listener:
    """A TCP listener in a namespace that misbehaves on purpose, to fill queues:
    accept=False never accepts (the accept queue grows); read=False accepts
    and never reads (Recv-Q grows); otherwise it reads everything (a sink)."""

    def __init__(
        self,
        ns_path: str | Path,
        addr: str,
        port: int,
        backlog: int = 128,
        accept: bool = True,
        read: bool = True,
    ):
        self.received = 0
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._args = (addr, port, backlog, accept, read)
        self._thread = in_netns(ns_path, self._run, name=f"listener:{port}")
        if not self._ready.wait(5):
            raise RuntimeError(f"listener on {addr}:{port} did not start")

    def _run(self) -> None:
        addr, port, backlog, accept, read = self._args
        srv = socket.socket()
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((addr, port))
        srv.listen(backlog)
        srv.settimeout(0.05)
        self._ready.set()
        with srv:
            while not self._stop.is_set():
                if not accept:
                    self._stop.wait(0.05)
                    continue
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                self.conns.append(conn)
                if read:
                    conn.settimeout(10)
                    while chunk := conn.recv(65536):
                        self.received += len(chunk)
        for c in self.conns:
            c.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def send_bytes(ns_path: str | Path, addr: str, port: int, nbytes: int, close: bool = True):
    """Connect from a namespace and send nbytes; returns the socket when close=False."""
    kept: list[socket.socket] = []

    def run() -> None:
        c = socket.create_connection((addr, port), timeout=10)
        c.sendall(b"b" * nbytes)
        if close:
            c.close()
        else:
            kept.append(c)

    in_netns(ns_path, run, name="send").join()
    return kept[0] if kept else None


def connect_only(ns_path: str | Path, addr: str, port: int, n: int) -> list[socket.socket]:
    """n connections left open (they complete the handshake, nobody accepts)."""
    conns: list[socket.socket] = []

    def run() -> None:
        for _ in range(n):
            conns.append(socket.create_connection((addr, port), timeout=5))

    in_netns(ns_path, run, name="connect").join()
    return conns
