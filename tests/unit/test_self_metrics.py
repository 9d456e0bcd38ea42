"""The daemon's own cost, as every Prometheus exporter serves it: process_*
(CPU, memory, file descriptors, start time) and python_* (as Go exporters
serve go_*), on the registry the daemon builds, written by its own encoders."""

from __future__ import annotations

import platform
import time

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from pyprobe.exporter import daemon
from pyprobe.exporter.server import PROMETHEUS_HEADERS, Server
from pyprobe.exporter.textformat import TextEncoder

PROCESS = (
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_start_time_seconds",
)


def test_the_daemons_registry_has_process_metrics_of_this_process():
    registry = daemon.own_registry()
    values = {name: registry.get_sample_value(name) for name in PROCESS}
    assert None not in values.values(), values
    assert values["process_resident_memory_bytes"] > 10e6  # a Python with prometheus_client
    assert values["process_virtual_memory_bytes"] >= values["process_resident_memory_bytes"]
    assert 0 < values["process_open_fds"] <= values["process_max_fds"]
    assert time.time() - 86400 < values["process_start_time_seconds"] <= time.time()
    with open(__file__) as _, open(__file__) as _:
        assert registry.get_sample_value("process_open_fds") == values["process_open_fds"] + 2
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    spent = registry.get_sample_value("process_cpu_seconds_total") - values[PROCESS[0]]
    assert spent >= 0.15, spent


def test_and_python_info_and_gc_as_go_exporters_have_go_info_and_gc():
    registry = daemon.own_registry()
    version = platform.python_version()
    major, minor, patch = version.split(".")[:3]
    labels = {"implementation": platform.python_implementation(), "version": version}
    labels.update(major=major, minor=minor, patchlevel=patch)
    assert registry.get_sample_value("python_info", labels) == 1
    for generation in ("0", "1", "2"):
        labels = {"generation": generation}
        assert registry.get_sample_value("python_gc_collections_total", labels) is not None


def test_the_exporters_encoders_write_them():
    registry = daemon.own_registry()
    text = TextEncoder()(registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert {"process_cpu_seconds", "process_open_fds", "python_info"} <= names, names
    server = Server.__new__(Server)  # no socket: only its choice of writer
    server.text, server.openmetrics = TextEncoder(), {}
    encoder, _ = server.encoder(PROMETHEUS_HEADERS["Accept"])  # OpenMetrics
    text = encoder(registry).decode()
    names = {f.name for f in openmetrics_families(text)}
    assert {"process_cpu_seconds", "process_open_fds", "python_info"} <= names, names
