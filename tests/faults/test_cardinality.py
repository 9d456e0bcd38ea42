"""3. Cardinality flood: 20k short-lived connections from distinct ports in
many namespaces. Every metric family stays under its label caps with an
"other" bucket, the folded-series counter rises, scrapes stay fast."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import defaultdict

import pytest

from pyprobe.exporter.caps import DEFAULT_CAP, DEFAULT_CAPS, OTHER
from tests.support import Exporter, get, timed_scrapes

pytestmark = [pytest.mark.root, pytest.mark.kernel]
NAMESPACES = 24
PER_NAMESPACE = 850  # 20,400 connections
CAP = 8
SAMPLE = re.compile(r"^(\w+?)(?:_total|_bucket|_sum|_count)?\{(.*)\} (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def label_values(text: str) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m:
            for k, v in LABEL.findall(m.group(2)):
                if k != "le":
                    out[(m.group(1), k)].add(v)
    return out


@pytest.fixture
def namespaces():
    names = [f"pfc{os.getpid()}-{i}" for i in range(NAMESPACES)]
    try:
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        yield names
    finally:
        for n in names:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def test_many_namespaces_and_ports_fold_into_other(namespaces, churn):
    caps = ["--label-cap", f"netns={CAP}", "--label-cap", f"netns_name={CAP}"]
    exporter = Exporter(*caps)
    try:
        get(exporter.url())
        connections = 0
        for ns in namespaces:
            server = subprocess.Popen(
                ["ip", "netns", "exec", ns, churn, "server", "127.0.0.1", "9300"]
            )
            try:
                time.sleep(0.05)
                out = subprocess.run(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns,
                        churn,
                        "client",
                        "127.0.0.1",
                        "9300",
                        "30",
                        str(PER_NAMESPACE),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                connections += round(float(out.stdout) > 0) * PER_NAMESPACE
                # and resets from a closed port, one per namespace's retransmit/reset series
                subprocess.run(
                    ["ip", "netns", "exec", ns, churn, "client", "127.0.0.1", "9301", "0.05", "5"],
                    capture_output=True,
                )
            finally:
                server.kill()
                server.wait()
        times, text = timed_scrapes(exporter, 10)
    finally:
        assert exporter.stop()[0] == 0
    values = label_values(text)
    caps_now = {**DEFAULT_CAPS, "netns": CAP, "netns_name": CAP}
    over = {
        key: len(v - {OTHER})
        for key, v in values.items()
        if len(v - {OTHER}) > caps_now.get(key[1], DEFAULT_CAP)
    }
    folded_netns = [
        line
        for line in text.splitlines()
        if line.startswith("pyprobe_series_folded_total{") and 'label="netns"' in line
    ]
    with_other = sorted(f for (f, label), v in values.items() if label == "netns" and OTHER in v)
    print(
        f"{connections} connections in {NAMESPACES} namespaces; scrape max "
        f"{max(times) * 1000:.0f} ms; families with netns=other: {with_other}; "
        f"folded: {folded_netns}"
    )
    assert connections == NAMESPACES * PER_NAMESPACE
    assert not over, over
    assert "pyprobe_tcp_state_transitions" not in with_other  # no netns label there
    assert {"pyprobe_netdev_transmit_packets", "pyprobe_tcp_resets_sent"} <= set(with_other)
    assert folded_netns and all(
        float(line.rsplit(" ", 1)[1]) >= NAMESPACES - CAP
        for line in folded_netns
        if "netdev_transmit_packets" in line
    )
    assert max(times) < 1.0
