"""1. Event floods: a ring buffer far too small for a burst. Every event the
kernel generated is either received or counted lost at reserve time, and the
exporter keeps answering while it happens."""

from __future__ import annotations

import re
import signal
import subprocess
import threading
import time

import pytest

from tests.faults.conftest import in_netns
from tests.support import PYPROBE, Exporter, first_line, get

pytestmark = [pytest.mark.root, pytest.mark.kernel]
CONNECTIONS = 50_000


def transitions(text: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("pyprobe_tcp_state_transitions_total{")
    )


def test_flood_from_an_unprivileged_user_is_received_or_counted_lost(pair, churn, tmp_path):
    exporter = Exporter("--probe", "tcpstates", "--probe", "drops")
    server = subprocess.Popen(
        in_netns(pair.path(pair.a), churn, "server", pair.addr_a, "9100", user="nobody")
    )
    out = (tmp_path / "events.ndjson").open("w")
    stream = None
    try:
        before = transitions(get(exporter.url())[1])
        # 1 page (4 KiB, ~40 events): lost long before the reader wakes.
        stream = subprocess.Popen(
            [PYPROBE, "tcpstates", "-j", "--buffer-pages", "1"],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert first_line(stream, stream.stderr, what="Tracing").startswith("Tracing")

        scrape_times: list[float] = []
        done = threading.Event()

        def scrape() -> None:
            while not done.is_set():
                start = time.monotonic()
                status, _ = get(exporter.url())
                scrape_times.append(time.monotonic() - start if status == 200 else 99)
                time.sleep(0.2)

        scraper = threading.Thread(target=scrape)
        scraper.start()
        client = subprocess.run(
            in_netns(
                pair.path(pair.b),
                *(churn, "client", pair.addr_a, "9100", "120", str(CONNECTIONS)),
                user="nobody",
            ),
            capture_output=True,
            text=True,
            timeout=180,
        )
        done.set()
        scraper.join()
        assert client.returncode == 0, client.stderr
        time.sleep(0.5)  # the reader drains what is buffered
        stream.send_signal(signal.SIGINT)
        _, err = stream.communicate(timeout=10)
        after = transitions(get(exporter.url())[1])
    finally:
        out.close()
        if stream is not None and stream.poll() is None:
            stream.kill()
        server.kill()
        server.wait()
        assert exporter.stop()[0] == 0

    received = sum(1 for _ in (tmp_path / "events.ndjson").open())
    lost = int(re.search(r"lost events: (\d+)", err).group(1))
    generated = after - before
    print(f"generated={generated:.0f} received={received} lost={lost} scrapes={scrape_times}")
    # at least: SYN_SENT, ESTABLISHED and CLOSE on the client side of each
    assert generated >= 3 * CONNECTIONS
    assert lost > 0, "the buffer was meant to overflow"
    assert abs(received + lost - generated) <= 0.01 * generated
    assert scrape_times and max(scrape_times) < 1.0
