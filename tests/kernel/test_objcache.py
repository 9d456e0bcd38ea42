"""The program cache (cache.py): a second load of the same programs
creates them from the kept instructions, without a compiler process, and
they count what the compiled ones count; a bad or unsafe entry is never
used, the program is compiled instead."""

from __future__ import annotations

import functools
import json
import os
import socket
import threading
import time
from pathlib import Path

import pytest

from pyprobe.errors import PyprobeError
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.load.compilers import CompilerLoader
from pyprobe.netns import devices
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]
NAMES = ["netdev", "tcpstates", "drops", "softirqs"]


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    where = tmp_path / "programs"
    monkeypatch.setenv("PYPROBE_PROGRAM_CACHE", str(where))
    return where


@pytest.fixture
def pair():
    with VethPair(prefix=f"po{time.monotonic_ns() % 100000}", net=81) as p:
        yield p


def load(names: list[str]) -> tuple[list, list, bool]:
    """(probes, results, whether a compiler process was started)."""
    loader = CompilerLoader(workers=2)
    try:
        probes = [registry.create(n, loader=loader) for n in names]
        results = loader.load_many([p.load_request() for p in probes])
        return probes, results, bool(loader._children)
    finally:
        loader.close()


def close(results: list) -> None:
    for r in results:
        if not isinstance(r, PyprobeError):
            r.close()


def test_second_load_reuses_the_programs_and_counts_the_same(cache, pair, no_programs_left):
    _probes, first, compiled = load(NAMES)
    close(first)
    assert compiled and not any(isinstance(r, PyprobeError) for r in first), first
    entries = sorted(cache.glob("*.json"))
    assert len(entries) == len(NAMES)
    assert all(e.stat().st_mode & 0o077 == 0 for e in entries)  # root's alone
    probes, results, compiled = load(NAMES)
    try:
        assert not compiled  # every program from the cache: no clang, no child
        for probe, result in zip(probes, results, strict=True):
            assert not isinstance(result, PyprobeError), result
            probe.adopt(result)
        netdev = probes[0]
        assert netdev.hook.kind == "tp_btf"
        srv = traffic.Server(pair.path(pair.b), pair.addr_b, 7700)
        before = devices.link_stats(pair.path(pair.b))[pair.dev_b]
        try:
            assert traffic.churn(pair.path(pair.a), pair.addr_b, 7700, 30) == 30
        finally:
            srv.stop()
        time.sleep(0.1)
        after = devices.link_stats(pair.path(pair.b))[pair.dev_b]
        rows = [
            r
            for r in netdev.rows()
            if r.get("netns") == str(pair.inode(pair.b)) and r.get("device") == pair.dev_b
        ]
        got = {r["metric"]: r["value"] for r in rows if "value" in r}
        assert got["netdev_receive_packets_total"] == after["rx_packets"] - before["rx_packets"]
        assert got["netdev_transmit_bytes_total"] == after["tx_bytes"] - before["tx_bytes"]
        transitions = {
            (r["old_state"], r["new_state"]): r["value"] for r in probes[1].rows() if "value" in r
        }
        assert transitions.get(("SYN_SENT", "ESTABLISHED"), 0) >= 30
    finally:
        for probe in probes:
            probe.detach()


def test_a_hit_marks_its_entry_used_and_a_save_prunes_stale_ones(cache, no_programs_left):
    close(load(["softirqs"])[1])
    (entry,) = cache.glob("*.json")
    month_ago = time.time() - 40 * 86400
    os.utime(entry, (month_ago, month_ago))
    _probes, results, compiled = load(["softirqs"])
    close(results)
    assert not compiled and time.time() - entry.stat().st_mtime < 60  # a hit: used now
    stale = cache / ("0" * 64 + ".json")
    stale.write_text("{}")
    os.utime(stale, (month_ago, month_ago))
    close(load(["drops"])[1])  # compiled and saved: the save prunes
    assert not stale.exists() and entry.exists() and len(list(cache.glob("*.json"))) == 2


def test_an_entry_that_no_longer_loads_is_dropped_and_compiled_again(cache, no_programs_left):
    close(load(["netdev"])[1])
    (entry,) = cache.glob("*.json")
    spec = json.loads(entry.read_text())
    spec["programs"][0]["insns"] = "AAAAAAAAAAA="  # one bogus instruction
    entry.write_text(json.dumps(spec))
    _probes, results, compiled = load(["netdev"])
    close(results)
    assert compiled and not isinstance(results[0], PyprobeError)
    assert json.loads(entry.read_text())["programs"][0]["insns"] != "AAAAAAAAAAA="  # saved anew


def test_a_cache_others_can_write_is_not_used(cache, no_programs_left):
    close(load(["softirqs"])[1])
    os.chmod(cache, 0o777)
    _probes, results, compiled = load(["softirqs"])
    close(results)
    assert compiled and not isinstance(results[0], PyprobeError)


def test_off_means_off(cache, monkeypatch, no_programs_left):
    monkeypatch.setenv("PYPROBE_PROGRAM_CACHE", "off")
    close(load(["softirqs"])[1])
    assert not cache.exists()


def test_pyprobe_compile_fills_the_cache_the_exporter_then_loads(cache, no_programs_left):
    # `make setup` runs `pyprobe compile`: the exporter's first start then
    # starts no compiler process at all.
    from pyprobe.cli.doctor import compiled_ahead
    from pyprobe.core.compile import compile_all
    from pyprobe.kernel.env import KernelEnv

    every = registry.names()
    # each probe's exporter program, and the CLI's stream of those that have one
    streams = [n for n in every if registry.create(n).manifest.event is not None]
    # (a new probe with an event joins this list without touching the test)
    assert {"drops", "tcpretrans", "tcpstates"} <= set(streams), streams
    hooked = {n for n in every if registry.manifest(n).hooks}  # (not conntrack's counters)
    programs = [p for n in every for p in (n, f"{n} (stream)") if p in hooked or n in streams]
    programs.insert(programs.index("tcpstates (stream)") + 1, "tcpstates (tcplife)")
    assert compiled_ahead(KernelEnv.detect(), registry)[2].startswith(f"0 of {len(programs)} ")
    env = KernelEnv.detect()
    make = lambda loader: [registry.create(n, env=env, loader=loader) for n in every]  # noqa: E731
    first = compile_all(env, make)
    assert [(o.probe, o.status) for o in first] == [(p, "compiled") for p in programs], first
    assert len(list(cache.glob("*.json"))) == len(programs)
    again = compile_all(env, make)
    assert [o.status for o in again] == ["kept"] * len(programs), again
    # what `pyprobe doctor` says now
    assert compiled_ahead(KernelEnv.detect(), registry)[:2] == ("ok", "programs")
    _probes, results, compiled = load(sorted(hooked))
    close(results)
    assert not compiled and not any(isinstance(r, PyprobeError) for r in results), results


def test_pyprobe_compile_with_the_cache_off_is_a_clear_error(monkeypatch, no_programs_left):
    monkeypatch.setenv("PYPROBE_PROGRAM_CACHE", "off")
    from pyprobe.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["compile"])
    assert exit_.value.code == 2


def test_counting_commands_load_through_the_cache_too(cache, monkeypatch, capsys, no_programs_left):
    # `pyprobe softirqs` and the like load as the exporter does: compiled once
    # in a compiler process, then from the cache (0.5 s to the first report
    # here instead of ~1 s, and no bcc in the command's own memory).
    # Loopback traffic while it counts: an idle tickless VM may run no softirq
    # at all in a short interval.
    argv = ["softirqs", "-F", "time", "-j", "0.5", "1"]  # its hooks: a program
    starts, outputs = _twice(monkeypatch, capsys, argv, _loopback_traffic)
    for out in outputs:
        (line,) = out.out.splitlines()
        record = json.loads(line)
        assert record["probe"] == "softirqs" and record["rows"], record
    assert starts == [1]  # a compiler process the first time only
    assert len(list(cache.glob("*.json"))) == 1


def test_streams_load_through_the_cache_too(cache, monkeypatch, capsys, no_programs_left):
    # `pyprobe tcpstates` loads its stream as the counting commands do: the
    # ring buffer comes back by fd with the maps, created anew from the kept
    # program on a hit (0.6 s to the first event instead of ~1.4 here), and
    # the events are the same: this test's own connections, nothing lost.
    ports: list[int] = []  # a new listener each time: some start after the attach
    traffic = functools.partial(_listen_connect_close, ports=ports)
    starts, outputs = _twice(monkeypatch, capsys, ["tcpstates", "-j", "-d", "1"], traffic)
    for out in outputs:
        events = [json.loads(line) for line in out.out.splitlines()]
        seen = {
            port: {e["newstate"] for e in events if port in (e["sport"], e["dport"])}
            for port in ports
        }
        whole = [p for p, states in seen.items() if {"LISTEN", "SYN_SENT", "CLOSE"} <= states]
        assert len(whole) > 5, (len(ports), seen)
        listen = next(e for e in events if e["newstate"] == "LISTEN" and e["sport"] == whole[0])
        assert listen["owner_known"] and listen["pid"] == os.getpid(), listen
        assert "lost events: 0" in out.err, out.err
    assert starts == [1]  # a compiler process the first time only
    assert len(list(cache.glob("*.json"))) == 1


def _twice(monkeypatch, capsys, argv: list[str], traffic) -> tuple[list[int], list]:
    """Run a command twice, each time under traffic(done) in a thread: the
    compiler processes started, and each run's captured output."""
    from pyprobe.cli import main

    starts: list[int] = []
    real = CompilerLoader._start
    monkeypatch.setattr(CompilerLoader, "_start", lambda self, n: starts.append(n) or real(self, n))
    outputs = []
    for _ in range(2):
        done = threading.Event()
        busy = threading.Thread(target=traffic, args=(done,))
        busy.start()
        try:
            main(argv)
        finally:
            done.set()
            busy.join()
        outputs.append(capsys.readouterr())
    return starts, outputs


def _listen_connect_close(done: threading.Event, ports: list[int]) -> None:
    while not done.is_set():
        with socket.create_server(("127.0.0.1", 0)) as srv:
            ports.append(srv.getsockname()[1])
            with socket.create_connection(srv.getsockname()) as c:
                c.sendall(b"x")
                srv.accept()[0].close()
        time.sleep(0.02)


def _loopback_traffic(done: threading.Event) -> None:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        port = srv.getsockname()[1]
        while not done.is_set():
            with socket.create_connection(("127.0.0.1", port)) as c:
                c.sendall(b"x")
                srv.accept()[0].close()
