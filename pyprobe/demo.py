"""`make demo` / `pyprobe demo`: a first look at tcpstates on real traffic.

Two namespaces joined by a veth pair; three bounded workloads (client closes
first, server closes first, connection refused); the live stream of state
changes while each runs; then the counts old->new and the live sockets per
state in each namespace (TIME_WAIT included). Removes everything it made.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack

from rich.console import Console

from . import netlink, registry
from .kernel import KernelEnv
from .lab import Server, VethPair, churn, refused
from .probes.tcpstates import TcpStates
from .render import TCPSTATE_HEADER, sockets_table, tcpstate_line, transitions_table
from .top import TopView

SHOW_LINES = 14  # per workload; the rest is counted, not printed


def run(env: KernelEnv, connections: int = 40) -> None:
    console = Console(highlight=False)
    start = time.monotonic()
    lab = VethPair(prefix="ppdemo")
    probe = registry.create("tcpstates", env=env)
    assert isinstance(probe, TcpStates)
    with lab, probe, ExitStack() as others:
        # Every other probe counts along; one `pyprobe top` frame at the end.
        counting = {}
        for name in registry.names():
            if name != "tcpstates":
                other = others.enter_context(registry.create(name, env=env))
                if other.available().hook is not None:
                    other.attach()
                    counting[name] = other
        view = TopView(counting)
        view.frame()
        srv, cli = lab.a, lab.b
        names = {lab.inode(srv): "srv", lab.inode(cli): "cli"}
        console.print(
            f"[bold]pyprobe demo[/]: namespaces {srv} ({lab.addr_a}) and {cli} "
            f"({lab.addr_b}) joined by a veth pair"
        )
        probe.attach(stream=True)
        console.print(
            f"tcpstates attached via [bold]{probe.hook and probe.hook.label}[/] "
            f"in {time.monotonic() - start:.1f}s\n"
        )

        def watch(title: str, workload: Callable[[], str]) -> None:
            console.rule(f"[bold]{title}")
            print(TCPSTATE_HEADER)
            summary = workload()
            shown = hidden = 0
            for ev in probe.events(timeout_ms=200):
                if ev["netns"] not in names:
                    continue  # the host's own traffic
                if shown < SHOW_LINES:
                    print(tcpstate_line(ev, names[ev["netns"]], timestamps=False))
                    shown += 1
                else:
                    hidden += 1
            if hidden:
                print(f"  ... and {hidden} more state changes")
            console.print(f"[green]{summary}[/]\n")
            sys.stdout.flush()

        s1 = Server(lab.path(srv), lab.addr_a, 8080, close_first="client")
        s2 = Server(lab.path(srv), lab.addr_a, 8081, close_first="server")
        try:
            watch(
                f"{connections} connections, the client closes first (its side ends in TIME_WAIT)",
                lambda: (
                    f"{churn(lab.path(cli), lab.addr_a, 8080, connections)} exchanges completed"
                ),
            )
            watch(
                f"{connections} connections, the server closes first (TIME_WAIT moves to the "
                "server)",
                lambda: (
                    f"{churn(lab.path(cli), lab.addr_a, 8081, connections, 'server')}"
                    " exchanges completed"
                ),
            )
            n_refused = max(1, connections // 4)
            watch(
                f"{n_refused} connects to a closed port (SYN answered by RST)",
                lambda: f"{refused(lab.path(cli), lab.addr_a, 8082, n_refused)} refused",
            )
            console.rule("[bold]What the kernel counted")
            total = probe.transitions()
            live = {
                names[ino]: c
                for ino, c in (
                    (lab.inode(ns), netlink.tcp_state_counts(lab.path(ns))) for ns in (srv, cli)
                )
            }
            console.print(
                transitions_table(
                    total,
                    total,
                    "TCP state transitions (in-kernel per-CPU counters, whole host)",
                )
            )
            console.print(
                sockets_table(
                    live,
                    "Live TCP sockets per namespace (sock_diag) — "
                    "like netstat -n | awk '/^tcp/ {++S[$NF]}'",
                )
            )
            lost = probe.lost()
            console.rule("[bold]Everything else, over the whole demo (pyprobe top)")
            console.print(view.frame())
        finally:
            s1.stop()
            s2.stop()
    tw = Counter({ns: c.get("TIME_WAIT", 0) for ns, c in live.items()})
    console.print(
        f"TIME_WAIT: cli {tw['cli']}, srv {tw['srv']} · lost events: {lost} · "
        f"namespaces removed, programs detached · {time.monotonic() - start:.1f}s"
    )
