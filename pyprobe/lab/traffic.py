"""Bounded traffic between namespaces: servers and listeners in a thread
that entered one, clients in another (setns affects only the calling
thread), for the demo, the lab's workloads and the tests."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from ..netns.namespaces import run_in_netns
from ..netns.namespaces import start_in_netns as in_netns


class _Serving:
    """A listening socket served by a thread in a namespace. Start-up waits
    until it listens, or raises OSError saying why not (the namespace is
    gone, the port is taken) rather than leaving a traceback in the thread
    and a client that finds nobody. A connection that breaks (timed out,
    reset: a lab with --loss breaks some) is counted in failed, and the next
    one is served."""

    def _serve(self, ns_path: str | Path, addr: str, port: int, backlog: int, what: str) -> None:
        self.failed = 0
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._addr = (addr, port, backlog)
        entered: list[OSError] = []
        self._thread = in_netns(ns_path, self._listen, name=f"{what}:{port}", failed=entered)
        deadline = time.monotonic() + 5
        while not self._ready.wait(0.05):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                break
        why = entered[0] if entered else self._error
        if why is not None or not self._ready.is_set():
            self._stop.set()  # should it start listening after all, it stops
            raise OSError(f"{what} on {addr}:{port} did not start: {why or 'timed out'}")

    def _listen(self) -> None:
        addr, port, backlog = self._addr
        try:
            srv = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
        except OSError as e:
            self._error = e
            self._ready.set()
            return
        with srv:
            try:
                srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                srv.bind((addr, port))
                srv.listen(backlog)
                srv.settimeout(0.05)
            except OSError as e:
                self._error = e
                return
            finally:
                self._ready.set()
            self._loop(srv)

    def _loop(self, srv: socket.socket) -> None:
        raise NotImplementedError

    def _accept(self, srv: socket.socket) -> socket.socket | None:
        try:
            return srv.accept()[0]
        except TimeoutError:
            return None  # a chance to see _stop

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


class Server(_Serving):
    """A TCP server in a namespace. close_first="server" closes after replying
    (the server side ends in TIME_WAIT); "client" waits for the client's FIN."""

    def __init__(self, ns_path: str | Path, addr: str, port: int, close_first: str = "client"):
        self.addr, self.port, self.close_first = addr, port, close_first
        self.accepted = 0
        self._serve(ns_path, addr, port, 1024, "server")

    def _loop(self, srv: socket.socket) -> None:
        while not self._stop.is_set():
            conn = self._accept(srv)
            if conn is None:
                continue
            try:
                with conn:
                    conn.settimeout(5)
                    conn.recv(1)
                    conn.sendall(b"y")
                    if self.close_first == "client":
                        while conn.recv(64):
                            pass
            except OSError:
                self.failed += 1
                continue
            self.accepted += 1


def churn(
    ns_path: str | Path,
    addr: str,
    port: int,
    n: int,
    close_first: str = "client",
    failures: list[str] | None = None,
) -> int:
    """n request/response connections from a namespace; returns how many
    completed. A connection that fails raises, unless failures is given: then
    its reason is added there and the next one starts (a lab with loss)."""

    def run() -> int:
        done = 0
        for _ in range(n):
            try:
                with socket.create_connection((addr, port), timeout=5) as c:
                    c.sendall(b"x")
                    if not c.recv(1):
                        raise ConnectionResetError("closed before the reply")
                    if close_first == "server":
                        while c.recv(64):
                            pass
            except OSError as e:
                if failures is None:
                    raise
                failures.append(e.strerror or str(e) or type(e).__name__)
                continue
            done += 1
        return done

    return run_in_netns(ns_path, run)


def refused(ns_path: str | Path, addr: str, port: int, n: int) -> int:
    """n connects to a closed port; returns how many were refused."""

    def run() -> int:
        count = 0
        for _ in range(n):
            try:
                socket.create_connection((addr, port), timeout=5).close()
            except ConnectionRefusedError:
                count += 1
            except OSError:  # the SYN or the RST lost (a lab with --loss)
                pass
        return count

    return run_in_netns(ns_path, run)


def udp_blast(ns_path: str | Path, addr: str, port: int, n: int, size: int = 100) -> int:
    """n datagrams of size bytes from a namespace; returns how many were sent."""

    def run() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            for _ in range(n):
                s.sendto(b"u" * size, (addr, port))
        return n

    return run_in_netns(ns_path, run)


class Listener(_Serving):
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
        self._accepting, self._reading = accept, read
        self._serve(ns_path, addr, port, backlog, "listener")

    def _loop(self, srv: socket.socket) -> None:
        try:
            while not self._stop.is_set():
                if not self._accepting:
                    self._stop.wait(0.05)
                    continue
                conn = self._accept(srv)
                if conn is None:
                    continue
                self.conns.append(conn)
                if self._reading:
                    conn.settimeout(10)
                    try:
                        while chunk := conn.recv(65536):
                            self.received += len(chunk)
                    except OSError:
                        self.failed += 1
        finally:
            for c in self.conns:
                c.close()


def send_bytes(ns_path: str | Path, addr: str, port: int, nbytes: int, close: bool = True):
    """Connect from a namespace and send nbytes; returns the socket when close=False."""

    def run() -> socket.socket | None:
        c = socket.create_connection((addr, port), timeout=10)
        try:
            c.sendall(b"b" * nbytes)
        except OSError:
            c.close()
            raise
        if close:
            c.close()
            return None
        return c

    return run_in_netns(ns_path, run)


def connect_only(ns_path: str | Path, addr: str, port: int, n: int) -> list[socket.socket]:
    """n connections left open (they complete the handshake, nobody accepts)."""

    def run() -> list[socket.socket]:
        conns: list[socket.socket] = []
        try:
            for _ in range(n):
                conns.append(socket.create_connection((addr, port), timeout=5))
        except OSError:
            for c in conns:
                c.close()
            raise
        return conns

    return run_in_netns(ns_path, run)
