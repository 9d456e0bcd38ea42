"""Scrape time of `pyprobe export` with many live TCP sockets, the series it
serves by default, its memory, and its time from start to first data.

Opens N/2 connections between two namespaces (N sockets), starts the
exporter, scrapes it every 1.05 s (each scrape cold, as under Prometheus),
and reports the first WARMUP scrapes apart from the rest.
Used by the bench (main.py, report.py); also runs alone:

    .venv/bin/python bench/scrape.py [--sockets 10000] [--scrapes 40]
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyprobe.exporter.server import PROMETHEUS_HEADERS
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces

PYPROBE = str(Path(sys.executable).with_name("pyprobe"))


INTERVAL = 1.05  # seconds between scrapes
# The exporter learns a steady scraper's pace from its first requests and
# then counts sockets just before each one comes (tcpsummary.Snapshots); the
# first scrapes count them while the scraper waits. Reported apart.
WARMUP = 4
PER_WORKER = 9000  # connections per helper process: 2 fds each, under a 20k fd limit


def scrape(url: str) -> str:
    """One scrape, as Prometheus makes it; the body unpacked (not timed apart:
    Prometheus unpacks it too)."""
    req = urllib.request.Request(url, headers=PROMETHEUS_HEADERS)
    with urllib.request.urlopen(req) as r:
        body = r.read()
        if r.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
    return body.decode()


def hold(ns_a: str, ns_b: str, addr_b: str, port: int, n: int) -> None:
    """A helper process: n connections from ns_a to a listener in ns_b, held
    open until stdin closes (the fd limit caps sockets per process)."""
    accepted: list[socket.socket] = []
    ready = threading.Event()

    def serve() -> None:
        srv = socket.socket()
        srv.bind((addr_b, port))
        srv.listen(4096)
        ready.set()
        while len(accepted) < n:
            accepted.append(srv.accept()[0])

    namespaces.start_in_netns(namespaces.NETNS_RUN_DIR / ns_b, serve)
    ready.wait()
    clients: list[socket.socket] = []

    def connect() -> None:
        for _ in range(n):
            clients.append(socket.create_connection((addr_b, port)))

    namespaces.start_in_netns(namespaces.NETNS_RUN_DIR / ns_a, connect).join()
    while len(accepted) < n:
        time.sleep(0.05)
    print("ready", flush=True)
    sys.stdin.read()


def started(env: dict[str, str], port: int) -> tuple[float, float]:
    """Seconds from exec to the first /metrics answer with a probe's data in
    it (the daemon serves from its first attached probe on), and to every
    probe attached (its "start-up complete" line)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        [PYPROBE, "export", "--web.listen-address", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.stderr is not None
    while "msg=listening " not in (proc.stderr.readline() or "msg=listening "):
        pass
    while not re.search(
        r"^pyprobe_probe_attached\{.*\} 1\.0$",
        scrape(f"http://127.0.0.1:{port}/metrics"),
        re.M,
    ):
        time.sleep(0.01)
    first = time.monotonic() - start
    while 'msg="start-up complete"' not in (proc.stderr.readline() or 'msg="start-up complete"'):
        pass
    complete = time.monotonic() - start
    proc.terminate()
    proc.wait(10)
    return first, complete


def startup(runs: int = 3, port: int = 19995) -> dict[str, list[float]]:
    """Start to first data, no socket load: starts that compile every program
    (the program cache off, or a kernel nothing was compiled for), first
    starts after an install (`pyprobe compile`, which `make setup` runs,
    filled the cache: pyprobe/precompile.py), and restarts (loading what an
    earlier start kept: pyprobe/objcache.py)."""
    cold = [started({"PYPROBE_PROGRAM_CACHE": "off"}, port) for _ in range(runs)]
    first = []
    for _ in range(runs):  # each an install of its own
        with tempfile.TemporaryDirectory() as installed:
            env = {"PYPROBE_PROGRAM_CACHE": installed}
            subprocess.run(
                [PYPROBE, "compile"], env={**os.environ, **env}, check=True, capture_output=True
            )
            first.append(started(env, port))
    with tempfile.TemporaryDirectory() as kept:
        started({"PYPROBE_PROGRAM_CACHE": kept}, port)  # compiles, and keeps
        warm = [started({"PYPROBE_PROGRAM_CACHE": kept}, port) for _ in range(runs)]
    return {
        "cold_s": [f for f, _ in cold],
        "cold_all_s": [c for _, c in cold],
        "installed_s": [f for f, _ in first],
        "installed_all_s": [c for _, c in first],
        "warm_s": [f for f, _ in warm],
        "warm_all_s": [c for _, c in warm],
    }


def measure(sockets: int, scrapes: int = 40, port: int = 19999) -> dict[str, float]:
    n = sockets // 2
    with VethPair(prefix="ppscrape", net=91) as pair:
        namespaces.run_in_netns(
            pair.path(pair.a),
            lambda: Path("/proc/sys/net/ipv4/ip_local_port_range").write_text("1024 65535"),
        )
        workers = []
        for k, start in enumerate(range(0, n, PER_WORKER)):
            count = min(PER_WORKER, n - start)
            workers.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "--hold",
                        pair.a,
                        pair.b,
                        pair.addr_b,
                        str(9100 + k),
                        str(count),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for w in workers:
            assert w.stdout is not None and w.stdout.readline().strip() == "ready"
        start = time.monotonic()
        # At debug level the daemon logs each socket pass, and whether a
        # scrape was waiting for it ("at the request") or it ran ahead.
        proc = subprocess.Popen(
            [
                PYPROBE,
                "export",
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--log.level",
                "debug",
            ],
            stderr=subprocess.PIPE,
            text=True,
        )
        assert proc.stderr is not None
        while 'msg="start-up complete"' not in (
            proc.stderr.readline() or 'msg="start-up complete"'
        ):
            pass
        waited: list[float] = []  # when a pass ran at a scrape's request

        def passes() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                if 'msg="socket pass" when="at the request"' in line:
                    waited.append(time.monotonic())

        threading.Thread(target=passes, daemon=True).start()
        url = f"http://127.0.0.1:{port}/metrics"
        body = scrape(url)
        startup = time.monotonic() - start
        times, series = [], 0
        due = time.monotonic()
        measured_from = 0.0
        for k in range(WARMUP + scrapes):
            if k == WARMUP:
                measured_from = time.monotonic()
            t = time.perf_counter()
            body = scrape(url)
            times.append(time.perf_counter() - t)
            series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
            # Past every cache (socket snapshot 0.5 s, link table 1 s): each
            # scrape pays what one does under Prometheus' 15 s interval. On
            # fixed ticks, like Prometheus' scrape loop: a slow scrape does
            # not push the next one later.
            due += INTERVAL
            time.sleep(max(0.0, due - time.monotonic()))
        rss = next(
            int(line.split()[1])
            for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        proc.terminate()
        proc.wait(10)
        for w in workers:
            w.communicate()
    each_ms = [round(t * 1000, 1) for t in times]
    first, times = times[:WARMUP], sorted(times[WARMUP:])
    return {
        "sockets": 2 * n,
        "unanticipated_ms": statistics.median(first) * 1000,
        "each_ms": each_ms,  # in the order taken, the first WARMUP included
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": times[min(len(times) - 1, int(len(times) * 0.99))] * 1000,
        # measured scrapes that counted sockets while waiting, the pace lost
        "waited_for_pass": sum(1 for t in waited if t >= measured_from),
        "series": series,
        "rss_mb": rss / 1024,
        "startup_s": startup,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=10000)
    ap.add_argument("--scrapes", type=int, default=40)
    ap.add_argument("--hold", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.hold:
        ns_a, ns_b, addr, port, count = args.hold
        hold(ns_a, ns_b, addr, int(port), int(count))
        return
    r = measure(args.sockets, args.scrapes)
    print(
        f"{r['sockets']} live sockets: scrape p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms "
        f"(before the pace is known: {r['unanticipated_ms']:.1f} ms; after it, "
        f"{r['waited_for_pass']} of {args.scrapes} waited for a socket pass); "
        f"{r['series']} series; RSS {r['rss_mb']:.0f} MB; first data after {r['startup_s']:.1f} s"
    )


if __name__ == "__main__":
    main()
