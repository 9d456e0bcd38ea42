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


# How long a child may take to say it started (attached, listening, ready).
# Here that is seconds; under software emulation (TCG) each bcc compile takes
# about a minute, so a Vagrant box's `make test` raises it.
START_WITHIN = float(os.environ.get("PYPROBE_TEST_START_WITHIN", "60"))


def lines_until(
    proc: subprocess.Popen, pipe, done, within: float = START_WITHIN, what: str = "a line"
) -> list[str]:
    """Lines from a child's text pipe up to the first one done(line) accepts,
    or to its end: waiting at most `within` seconds. A bare readline() on a
    child that goes quiet (under TCG, a compile that takes minutes) blocked
    the suite with no end; here the child is killed then (which ends the read,
    unless a grandchild holds the pipe) and the test fails saying what it
    waited for. The last line is the accepted one, if any."""
    lines: list[str] = []
    finished = threading.Event()

    def read() -> None:
        try:
            for line in pipe:
                lines.append(line)
                if done(line):
                    return
        finally:
            finished.set()

    threading.Thread(target=read, daemon=True).start()
    if not finished.wait(within):
        proc.kill()
        raise AssertionError(
            f"no {what} from {' '.join(map(str, proc.args))} within {within:.0f}s "
            "(killed it; PYPROBE_TEST_START_WITHIN raises the bound):\n" + "".join(lines)
        )
    return lines


def first_line(proc: subprocess.Popen, pipe, within: float = START_WITHIN, what="a line") -> str:
    """The child's first line on pipe ('' at its end), waited for at most `within` s."""
    lines = lines_until(proc, pipe, lambda _: True, within, what)
    return lines[0] if lines else ""


class Exporter:
    def __init__(
        self,
        *args: str,
        env: dict | None = None,
        prefix: list[str] | None = None,
        until: str = 'msg="start-up complete"',  # serving, every probe attached or failed
        within: float = START_WITHIN,
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
        # One reader for the daemon's life, into self.log: a full stderr pipe
        # would block its logging. The wait for `until` is bounded: the old
        # loop checked its deadline only between lines, then read stderr to
        # its end, which a daemon still starting never reaches.
        self.log: list[str] = []
        self._started = threading.Event()
        self._ended = threading.Event()
        self._until = until
        threading.Thread(target=self._drain, daemon=True).start()
        self._started.wait(within)
        if not any(until in line for line in self.log):
            if self.proc.poll() is None:
                self.proc.kill()
            self._ended.wait(5)
            raise AssertionError(
                f"exporter did not start within {within:.0f}s (PYPROBE_TEST_START_WITHIN):\n"
                + "".join(self.log)
            )

    def _drain(self) -> None:
        try:
            for line in self.proc.stderr:
                self.log.append(line)
                if self._until in line:
                    self._started.set()
        finally:
            self._ended.set()
            self._started.set()  # ended before `until`: no use waiting

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


def nstat_in(path: str | Path) -> dict[str, int]:
    """A namespace's /proc/net/snmp and netstat counters, named as nstat
    names them (TcpInSegs, TcpExtListenOverflows...): ground truth."""
    from pyprobe.netns.namespaces import run_in_netns

    def read() -> dict[str, int]:
        out: dict[str, int] = {}
        for f in ("snmp", "netstat"):
            lines = Path(f"/proc/thread-self/net/{f}").read_text().splitlines()
            for names, values in zip(lines[::2], lines[1::2], strict=True):
                prefix, _, keys = names.partition(": ")
                for k, v in zip(keys.split(), values.split()[1:], strict=True):
                    out[prefix + k] = int(v)
        return out

    return run_in_netns(path, read)
