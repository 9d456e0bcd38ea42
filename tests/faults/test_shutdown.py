"""The exporter's exit with HTTP clients in flight: start it, let clients
scrape, stall half-way through a request or hang up at random moments (from
the first moment the port is bound, while the probes still compile), then
SIGTERM or SIGINT it at a random moment. Each time: exit 0, no traceback in
its log, no process of its left behind (the daemon, its compiler
processes), and the kernel's BPF programs and links back to what they were.

A few dozen rounds in `make test`; PYPROBE_SHUTDOWN_ROUNDS (200 in `make
soak`) for more. The seed is printed: PYPROBE_SHUTDOWN_SEED repeats a run.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import bpf_prog_count, quiet_prog_count

pytestmark = [pytest.mark.root, pytest.mark.kernel, pytest.mark.faults]

PYPROBE = str(Path(sys.executable).with_name("pyprobe"))
ROUNDS = int(os.environ.get("PYPROBE_SHUTDOWN_ROUNDS", "30"))
SEED = int(os.environ.get("PYPROBE_SHUTDOWN_SEED", str(time.time_ns() % 10**6)))
PARTIAL = b"GET /metrics HTTP/1.1\r\nHost: x\r\n"  # no blank line: the request never ends
SCRAPE = PARTIAL + b"Accept-Encoding: gzip\r\n\r\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bpf_link_count() -> int:
    out = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True, check=True)
    return sum(1 for line in out.stdout.splitlines() if line[:1].isdigit())


def left_behind(pid: int, port: int) -> list[str]:
    """Processes of this round still there: the daemon (its command line
    names the port) or a child it started (its parent, or its parent's pid on
    its command line, for a compiler process)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        mine = (
            f"127.0.0.1:{port}" in cmdline
            or ppid == pid
            or ("compiler_process" in cmdline and cmdline.split()[-1:] == [str(pid)])
        )
        if mine and "pyprobe" in cmdline:
            found.append(f"{entry.name}: {cmdline.strip()}")
    return found


def clients(port: int, rng: random.Random, stop: threading.Event) -> list[socket.socket]:
    """Until stop: connections that scrape, stall mid-request (kept open) or
    hang up at once, a few at a time, from whenever the port answers."""
    held: list[socket.socket] = []
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
        except OSError:
            time.sleep(0.005)  # not bound yet, or gone
            continue
        kind = rng.random()
        try:
            if kind < 0.5:
                s.sendall(PARTIAL)
                held.append(s)  # a slow client: keeps its request half-sent
                if len(held) > 64:
                    held.pop(0).close()
                continue
            if kind < 0.8:
                s.sendall(SCRAPE)
                with contextlib.suppress(OSError):
                    s.recv(4096)
            s.close()  # or hangs up at once
        except OSError:
            s.close()
        time.sleep(rng.uniform(0, 0.02))
    return held


def load(port: int, rng: random.Random, stop: threading.Event, held: list) -> None:
    held.extend(clients(port, rng, stop))


KEPT = ("softirqs", "tcpstates")  # in the program cache: attached at once, then served
COMPILED = "napi"  # not kept: compiled in a child while the first ones are served


def test_exits_clean_whenever_it_is_stopped_with_clients_in_flight(tmp_path):
    """The daemon serves from its first attached probe on: with two probes
    kept in the program cache and a third compiled, the compiler process is
    started while the HTTP server already answers, the case that leaked."""
    print(f"seed {SEED}, {ROUNDS} rounds")
    rng = random.Random(SEED)
    cache = tmp_path / "programs"
    env = {**os.environ, "PYPROBE_PROGRAM_CACHE": str(cache)}
    argv = [PYPROBE, "compile", *(a for name in KEPT for a in ("--probe", name))]
    subprocess.run(argv, env=env, check=True, capture_output=True)
    kept = set(cache.iterdir())
    programs, links = quiet_prog_count(), bpf_link_count()
    for n in range(ROUNDS):
        for entry in set(cache.iterdir()) - kept:  # the third compiles again each round
            if entry.is_file():
                entry.unlink()
        port = free_port()
        log = tmp_path / f"round{n}.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [PYPROBE, "export", *(a for name in (*KEPT, COMPILED) for a in ("--probe", name)),
                 "--web.listen-address", f"127.0.0.1:{port}"],
                stdout=out, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
        stop = threading.Event()
        held: list[socket.socket] = []
        loaders = [
            threading.Thread(target=load, args=(port, random.Random(rng.random()), stop, held))
            for _ in range(3)
        ]
        for t in loaders:
            t.start()
        # From the moment pyprobe's code runs (the interpreter's own start and
        # imports take ~0.2 s, under the default handlers): while it binds,
        # compiles (~1-2 s here) or serves.
        when = rng.uniform(0.3, 3.0)
        sig = rng.choice([signal.SIGTERM, signal.SIGINT])
        time.sleep(when)
        proc.send_signal(sig)
        try:
            code = proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            stop.set()
            for t in loaders:
                t.join()
            for s in held:
                s.close()
        what = f"round {n}: {signal.Signals(sig).name} after {when:.2f}s"
        text = log.read_text()
        assert code == 0, f"{what}: exit {code}\n{text}"
        assert "Traceback" not in text and "Exception occurred" not in text, f"{what}\n{text}"
        deadline = time.monotonic() + 5  # a compiler process notices within a second
        while (rest := left_behind(proc.pid, port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rest == [], f"{what}: left behind {rest}\n{text}"
        deadline = time.monotonic() + 3  # programs are freed after an RCU grace period
        while (bpf_prog_count(), bpf_link_count()) != (programs, links):
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{what}: {bpf_prog_count()} programs, {bpf_link_count()} links "
                    f"where there were {programs} and {links}\n{text}"
                )
            time.sleep(0.05)
