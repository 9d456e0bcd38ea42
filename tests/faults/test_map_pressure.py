"""2. Map pressure: 100k sockets alive at once. Per-socket maps are LRU;
the others are bounded, and an insert into a full one is counted
(pyprobe_map_update_errors_total), never silent; entries and capacity are
exported; the daemon's memory stays flat."""

from __future__ import annotations

import re
import time

import pytest

from tests.faults.conftest import ManySockets, rss_kib
from tests.support import Exporter, get, sample, timed_scrapes

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def series(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line.rsplit(" ", 1)
            out[labels[len(name) :]] = float(value)
    return out


def test_100k_live_sockets(pair):
    exporter = Exporter()  # every probe
    try:
        for _ in range(5):
            get(exporter.url())
        rss_idle = rss_kib(exporter.proc.pid)
        start = time.monotonic()
        with ManySockets(pair, 100_000):
            took = time.monotonic() - start
            times, text = timed_scrapes(exporter, 20)
            rss_first = rss_kib(exporter.proc.pid)
            for _ in range(20):
                get(exporter.url())
            rss_last = rss_kib(exporter.proc.pid)
            used = series(text, "pyprobe_map_entries")
            cap = series(text, "pyprobe_map_max_entries")
            errors = series(text, "pyprobe_map_update_errors_total")
            established = sum(
                v
                for k, v in series(text, "pyprobe_tcp_sockets").items()
                if ('state="ESTABLISHED"' in k and pair.a in k) or pair.b in k
            )
        print(
            f"100k sockets up in {took:.1f}s; scrape max {max(times) * 1000:.0f} ms; "
            f"RSS idle {rss_idle} KiB, first {rss_first}, after 40 scrapes {rss_last}; "
            f"established in the pair's namespaces: {established}"
        )
        assert established >= 100_000
        assert used and all(used[k] <= cap[k] for k in used)
        assert set(errors) == set(used) and not any(errors.values())
        assert max(times) < 2.0
        assert rss_last <= rss_first * 1.05
        assert rss_last - rss_idle < 64 * 1024
    finally:
        assert exporter.stop()[0] == 0


def test_a_full_map_counts_its_update_errors(pair):
    """netdev's device map shrunk to 2 entries, without its front slots,
    traffic on 3 devices: the third device's packets are counted as errors,
    the map stays at 2."""
    from pyprobe.lab import traffic

    exporter = Exporter(
        "--probe",
        "netdev.sizes",  # its map: the sizes' hooks count every packet there
        env={"PYPROBE_MAP_ENTRIES": "netdev.devices=2,netdev.devices_front=0"},
    )
    try:
        server = traffic.Server(pair.path(pair.a), pair.addr_a, 9200, "client")
        try:
            assert traffic.churn(pair.path(pair.b), pair.addr_a, 9200, 20) == 20
            import socket

            with socket.create_connection(("127.0.0.1", exporter.port)):
                pass  # loopback: a third device
        finally:
            server.stop()
        text = get(exporter.url())[1]
        assert sample(text, "pyprobe_map_max_entries", probe="netdev", map="devices") == 2
        assert sample(text, "pyprobe_map_entries", probe="netdev", map="devices") == 2
        errors = sample(text, "pyprobe_map_update_errors_total", probe="netdev", map="devices")
        assert errors and errors > 0
        assert re.search(r'pyprobe_netdev_packet_size_bytes_bucket\{[^}]*device="', text)
    finally:
        assert exporter.stop()[0] == 0
