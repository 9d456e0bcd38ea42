"""Helpers the kernel and fault suites share: a real exporter process, HTTP
GETs, reading one sample out of an exposition, a compiled churn client."""

from __future__ import annotations

import base64
import ctypes
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from pyprobe.core import pcapfilter
from pyprobe.load.bcc import BccLoader
from pyprobe.probes import Registry

ROOT = Path(__file__).resolve().parents[1]
PYPROBE = str(Path(sys.executable).with_name("pyprobe"))


def churn_binary() -> str:
    """bench/churn.c compiled once per session (connect/1-byte/close as fast as C goes)."""
    out = Path(tempfile.gettempdir()) / f"pyprobe-test-churn-{os.getpid()}"
    if not out.exists():
        subprocess.run(["gcc", "-O2", "-o", str(out), str(ROOT / "bench" / "churn.c")], check=True)
    return str(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    def __init__(
        self,
        *args: str,
        env: dict | None = None,
        prefix: list[str] | None = None,
        until: str = 'msg="start-up complete"',  # serving, every probe attached or failed
    ):
        self.port = free_port()
        self.args = ["--web.listen-address", f"127.0.0.1:{self.port}", *args]
        self.proc = subprocess.Popen(
            [*(prefix or []), PYPROBE, "export", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.log: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.log.append(line)
            if until in line:
                # keep reading: a full stderr pipe would block the daemon's logging
                threading.Thread(target=self._drain, daemon=True).start()
                return
        raise AssertionError(
            "exporter did not start:\n" + "".join(self.log) + self.proc.stderr.read()
        )

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.log.append(line)

    def url(self, path: str = "/metrics", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def stop(self, sig: int = signal.SIGTERM) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(sig)
        try:
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        return self.proc.returncode, time.monotonic() - start


def get(url: str, auth: tuple[str, str] | None = None, context=None) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def timed_scrapes(exporter: Exporter, n: int) -> tuple[list[float], str]:
    """n scrapes, each asserted 200: their durations and the last body."""
    times, text = [], ""
    for _ in range(n):
        t = time.monotonic()
        status, text = get(exporter.url())
        times.append(time.monotonic() - t)
        assert status == 200
    return times, text


def ping_overflow(ns_path: str | Path, count: int, settle: float) -> int:
    """In a namespace: a ping socket with a tiny receive buffer echoes itself
    count pings, so its queue overflows (sock:sock_rcvqueue_full, which UDP no
    longer fires). Returns the drops /proc/net/icmp counts for that socket."""
    from pyprobe.netns import namespaces

    namespaces.run_in_netns(
        ns_path, lambda: Path("/proc/sys/net/ipv4/ping_group_range").write_text("0 0")
    )

    def pings() -> int:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 256)
            s.connect(("127.0.0.1", 0))
            for i in range(count):
                s.send(struct.pack("!BBHHH", 8, 0, 0, 0, i) + b"p" * 200)
            time.sleep(settle)
            line = Path("/proc/thread-self/net/icmp").read_text().splitlines()[1]
        return int(line.split()[-1])

    return namespaces.run_in_netns(ns_path, pings)


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith((name + "{", name + " ")) and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            return float(line.rsplit(" ", 1)[1])
    return None


class _Registry(Registry):
    """The install's probes, created with a loader that compiles in this
    process unless a test gives another, and every feature on unless a test
    says which: the kernel tests load and check every program for real."""

    def create(self, name: str, env=None, loader=None, features=("all",)):
        return super().create(name, env, loader or BccLoader(), features)


registry = _Registry()


class _PktHdr(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("usec", ctypes.c_long), ("caplen", ctypes.c_uint32),
                ("len", ctypes.c_uint32)]  # fmt: skip


def read_with_libpcap(path) -> tuple[int, list[tuple[bytes, int]]]:
    """(link type, [(bytes, length on the wire)]) as libpcap reads the file
    (tcpdump -r reads it the same way)."""
    lib = pcapfilter._libpcap()
    lib.pcap_open_offline.restype = ctypes.c_void_p
    lib.pcap_open_offline.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.pcap_next_ex.argtypes = [
        ctypes.c_void_p, ctypes.POINTER(ctypes.POINTER(_PktHdr)),
        ctypes.POINTER(ctypes.POINTER(ctypes.c_ubyte)),
    ]  # fmt: skip
    lib.pcap_datalink.argtypes = [ctypes.c_void_p]
    err = ctypes.create_string_buffer(256)
    handle = lib.pcap_open_offline(str(path).encode(), err)
    assert handle, err.value
    hdr, data = ctypes.POINTER(_PktHdr)(), ctypes.POINTER(ctypes.c_ubyte)()
    out = []
    try:
        while lib.pcap_next_ex(handle, ctypes.byref(hdr), ctypes.byref(data)) == 1:
            out.append((ctypes.string_at(data, hdr.contents.caplen), hdr.contents.len))
        return lib.pcap_datalink(handle), out
    finally:
        lib.pcap_close(handle)
