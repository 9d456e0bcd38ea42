"""9. Soak: the exporter (every probe) and a tcpstates stream under steady,
mixed traffic between namespaces. RSS drift at most 5%, no event lost at a
moderate rate, every counter monotonic across the whole run.

`make test` runs it for PYPROBE_SOAK_SECONDS (default 60); `make soak` for 30
minutes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

import pytest

from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from tests.faults.conftest import rss_kib
from tests.support import PYPROBE, Exporter, first_line, get

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.slow]
SECONDS = float(os.environ.get("PYPROBE_SOAK_SECONDS", "60"))
COUNTER = re.compile(r"^(pyprobe_\w+(?:_total|_count|_sum|_bucket))(\{.*\})? (\S+)$")


def counters(text: str) -> dict[str, float]:
    """Every counter and histogram sample; gauge histograms (a snapshot, with
    _gcount/_gsum) are not counts since start and are left out."""
    gauge_histograms = set(re.findall(r"^(pyprobe_\w+)_gcount\b", text, re.M))
    out = {}
    for line in text.splitlines():
        m = COUNTER.match(line)
        if m and m.group(1).rsplit("_", 1)[0] not in gauge_histograms:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def drive(pair: VethPair, stop: threading.Event, done: dict[str, int]) -> None:
    """About 100 connections, 10 refused connects and 2,000 datagrams a second."""
    server = traffic.Server(pair.path(pair.b), pair.addr_b, 7900)
    try:
        while not stop.is_set():
            start = time.monotonic()
            done["connections"] += traffic.churn(pair.path(pair.a), pair.addr_b, 7900, 25)
            done["refused"] += traffic.refused(pair.path(pair.a), pair.addr_b, 7901, 3)
            done["datagrams"] += traffic.udp_blast(pair.path(pair.a), pair.addr_b, 7902, 500)
            time.sleep(max(0.0, 0.25 - (time.monotonic() - start)))
    finally:
        server.stop()


def test_soak(pair, tmp_path):
    exporter = Exporter()
    stream_out = (tmp_path / "states.ndjson").open("w")
    stream = subprocess.Popen(
        [PYPROBE, "tcpstates", "-j", "--netns", pair.a],
        stdout=stream_out,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert first_line(stream, stream.stderr, what="Tracing").startswith("Tracing")
    stop, done = threading.Event(), {"connections": 0, "refused": 0, "datagrams": 0}
    load = threading.Thread(target=drive, args=(pair, stop, done))
    pid = exporter.proc.pid
    rss, scrape_times, regressions = [], [], []
    previous: dict[str, float] = {}
    try:
        load.start()
        start = time.monotonic()
        while time.monotonic() - start < SECONDS:
            t = time.monotonic()
            status, text = get(exporter.url())
            scrape_times.append(time.monotonic() - t)
            assert status == 200
            now = counters(text)
            regressions += [k for k, v in now.items() if v < previous.get(k, 0)]
            previous = now
            rss.append((time.monotonic() - start, rss_kib(pid)))
            time.sleep(max(0.5, min(5.0, SECONDS / 60)))
        stop.set()
        load.join()
        time.sleep(0.5)
        stream.send_signal(signal.SIGINT)
        _, err = stream.communicate(timeout=10)
    finally:
        stop.set()
        stream_out.close()
        if stream.poll() is None:
            stream.kill()
        assert exporter.stop()[0] == 0
    lost = int(re.search(r"lost events: (\d+)", err).group(1))
    events = sum(1 for _ in (tmp_path / "states.ndjson").open())
    warm = next(kib for t, kib in rss if t >= SECONDS / 4)
    end = rss[-1][1]
    drift = (end - warm) / warm
    print(
        f"soak {SECONDS:.0f}s: {done}; stream {events} events, {lost} lost; RSS "
        f"{rss[0][1]} -> {warm} (warm) -> {end} KiB, drift {drift:+.1%}; "
        f"{len(scrape_times)} scrapes, max {max(scrape_times) * 1000:.0f} ms"
    )
    assert done["connections"] > 0 and done["datagrams"] > 0
    assert not regressions, regressions[:10]
    assert lost == 0
    # each client connection: SYN_SENT, ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE...
    assert events >= 4 * done["connections"] + 2 * done["refused"]
    assert drift <= 0.05
