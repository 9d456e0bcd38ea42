"""CompilerLoader.load_many: compiler children take the next request when they
finish their last, answers come back in request order, a program that does
not compile is its own error, and a dead child's work goes to the others.
load_each: answers as each is ready; closed early, it ends the children and
what they were compiling."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import pytest

from pyprobe.errors import PyprobeError
from pyprobe.load.compilers import CompilerLoader
from tests.conftest import quiet_prog_count, settled_prog_count
from tests.support import registry

pytestmark = [pytest.mark.root, pytest.mark.kernel]


def requests(loader: CompilerLoader, names: list[str]) -> list:
    return [registry.create(n, loader=loader).load_request() for n in names]


def close_all(results: list) -> None:
    for r in results:
        if not isinstance(r, PyprobeError):
            r.close()


def test_answers_in_request_order_with_a_broken_program_among_them(tmp_path):
    loader = CompilerLoader(workers=2)
    try:
        names = ["tcpstates", "softirqs", "drops", "napi", "netdev"]
        reqs = requests(loader, names)
        broken = tmp_path / "broken.bpf.c"
        broken.write_text("int f(void *ctx) { return undeclared; }\n")
        reqs.insert(2, dataclasses.replace(reqs[1], source=broken))
        results = loader.load_many(reqs)
        assert len(results) == len(reqs)
        assert isinstance(results[2], PyprobeError)
        for req, r in zip(reqs[:2] + reqs[3:], results[:2] + results[3:], strict=True):
            assert not isinstance(r, PyprobeError), r
            assert r.hook.points == req.hook.points, req.source  # its own, not a neighbour's
        close_all(results)
    finally:
        loader.close()


def test_a_dead_child_leaves_its_work_to_the_other():
    loader = CompilerLoader(workers=2)
    try:
        reqs = requests(loader, ["softirqs", "tcpstates", "napi"])
        loader._start(2)
        loader._children[0][0].kill()
        results = loader.load_many(reqs)
        died = [r for r in results if isinstance(r, PyprobeError)]
        assert len(died) == 1 and "compiler process" in str(died[0])
        loaded = [r for r in results if not isinstance(r, PyprobeError)]
        assert len(loaded) == 2  # the first request went to the dead child; the rest did not
        assert all(any(r.hook.points == q.hook.points for q in reqs) for r in loaded)
        close_all(results)
    finally:
        loader.close()


def test_load_each_answers_as_each_is_ready_and_closing_it_ends_the_compiling():
    before = quiet_prog_count()
    loader = CompilerLoader(workers=1)
    try:
        reqs = requests(loader, ["drops", "softirqs", "tcpstates"])
        each = loader.load_each(reqs)
        start = time.monotonic()
        i, first = next(each)
        took = time.monotonic() - start
        assert i == 0 and not isinstance(first, PyprobeError), first
        assert len(loader._children) == 1  # compiling softirqs now
        assert bpf_prog_count_of(first) >= 1
        child = loader._children[0][0]
        start = time.monotonic()
        each.close()
        closed_in = time.monotonic() - start
        assert loader._children == []
        with pytest.raises(ProcessLookupError):
            os.kill(child.pid, 0)  # killed and reaped, not left to finish
        # softirqs was being compiled: a kill does not wait for that (a
        # compile takes 0.3-1 s here; the first one took `took`)
        assert closed_in < max(0.2, took / 2), (closed_in, took)
        first.close()
        assert settled_prog_count(before) == before  # nothing of the unfinished left
    finally:
        loader.close()


def bpf_prog_count_of(program) -> int:
    return len(program.program_fds())


def test_where_a_ring_cannot_be_mapped_its_stream_loads_in_process(monkeypatch, no_programs_left):
    # Not x86 (ringbuf.available): the ring is read through bcc's callback,
    # so the stream is compiled in this process, and no child is started.
    import socket

    from pyprobe.load import ringbuf
    from pyprobe.load.bcc import BccProgram

    monkeypatch.setattr(ringbuf, "available", lambda: False)
    monkeypatch.setenv("PYPROBE_PROGRAM_CACHE", "off")
    loader = CompilerLoader()
    probe = registry.create("tcpstates", loader=loader)
    try:
        probe.attach(stream=True)
        assert not loader._children
    finally:
        loader.close()
    with probe:
        assert isinstance(probe.program, BccProgram) and probe.program.ring_reader() is None
        with socket.create_server(("127.0.0.1", 0)) as srv:
            port = srv.getsockname()[1]
        events = probe.events(timeout_ms=300)
        states = [e["newstate"] for e in events if e["sport"] == port]
        assert states == ["LISTEN", "CLOSE"], events[:5]
        assert probe.lost() == 0


def test_a_compiler_process_whose_parent_died_ends_by_itself(tmp_path):
    """The leaked child's case: its parent gone while another process still
    holds the parent's end of the socket (no EOF comes). It ends by itself
    (the parent-death signal, else its look at its parent each second)."""
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from pyprobe.load.compilers import CompilerLoader\n"
        "loader = CompilerLoader(workers=1)\n"
        "loader._start(1)\n"
        "proc, sock = loader._children[0]\n"
        "if os.fork() == 0:  # a process that keeps the socket open, outliving us\n"
        "    time.sleep(30)\n"
        "    os._exit(0)\n"
        "print(proc.pid, flush=True)\n"
        "time.sleep(30)\n"
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    time.sleep(0.5)  # started, waiting for work
    os.kill(child, 0)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"compiler process {child} outlived its parent")
    subprocess.run(["pkill", "-f", str(script)], check=False)  # the socket holder
