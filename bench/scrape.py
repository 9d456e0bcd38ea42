"""Scrape time of `pyprobe export` with many live TCP sockets, and how many
series it serves by default.

Opens N connections between two namespaces (2N sockets), starts the
exporter, scrapes it repeatedly and prints p50/p99 scrape time and the series
count. A measurement for the notes and bench/, not a test.

    .venv/bin/python bench/scrape.py [--sockets 10000] [--scrapes 30]
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from pyprobe import lab, netlink

PYPROBE = str(Path(sys.executable).with_name("pyprobe"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sockets", type=int, default=10000)
    ap.add_argument("--scrapes", type=int, default=30)
    args = ap.parse_args()
    n = args.sockets // 2
    resource.setrlimit(resource.RLIMIT_NOFILE, (n * 2 + 1000, n * 2 + 1000))
    with lab.VethPair(prefix="ppscrape", net=91) as pair:
        accepted: list[socket.socket] = []
        ready = threading.Event()

        def serve() -> None:
            srv = socket.socket()
            srv.bind((pair.addr_b, 9100))
            srv.listen(4096)
            ready.set()
            while len(accepted) < n:
                accepted.append(srv.accept()[0])

        netlink.start_in_netns(pair.path(pair.b), serve)
        ready.wait()
        clients: list[socket.socket] = []

        def connect() -> None:
            for _ in range(n):
                clients.append(socket.create_connection((pair.addr_b, 9100)))

        netlink.start_in_netns(pair.path(pair.a), connect).join()
        while len(accepted) < n:
            time.sleep(0.05)
        port = 19999
        proc = subprocess.Popen(
            [PYPROBE, "export", "--web.listen-address", f"127.0.0.1:{port}"],
            stderr=subprocess.PIPE, text=True,
        )
        while 'msg="listening"' not in (proc.stderr.readline() or 'msg="listening"'):
            pass
        times, series = [], 0
        for _ in range(args.scrapes):
            start = time.perf_counter()
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            times.append(time.perf_counter() - start)
            series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
        proc.terminate()
        proc.wait(10)
        for s in clients + accepted:
            s.close()
    print(" ".join(f"{t*1000:.0f}" for t in times))
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(
        f"{2 * n} live sockets: scrape p50 {statistics.median(times) * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms over {len(times)} scrapes; {series} series"
    )


if __name__ == "__main__":
    main()
