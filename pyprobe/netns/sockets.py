"""TCP sockets of a namespace (sock_diag) and who owns them (/proc/*/fd)."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..kernel.host import host
from ..kernel.names import tcp_state
from . import sockdiag
from .namespaces import in_netns
from .sockdiag import Sock


def tcp_sockets() -> list[Sock]:
    """Every TCP socket of the caller's namespace: state and queues (like `ss -tan`)."""
    return sockdiag.tcp_sockets()


def tcp_state_counts(netns_path: str | Path | None = None) -> Counter[str]:
    """The `netstat -n | awk '/^tcp/ {++S[$NF]}'` count, for one namespace."""

    def count() -> Counter[str]:
        return Counter(tcp_state(s.state) for s in sockdiag.tcp_sockets())

    return in_netns(netns_path, count)


def socket_owners() -> dict[int, tuple[int, str]]:
    """socket inode -> (pid, comm) from the host's /proc/*/fd, like `ss -p`
    (first owner wins)."""
    owners: dict[int, tuple[int, str]] = {}
    proc = host().procfs
    for pid in os.listdir(proc):
        if not pid.isdigit():
            continue
        fd_dir = f"{proc}/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
            comm = Path(f"{proc}/{pid}/comm").read_text().strip()
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"{fd_dir}/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                owners.setdefault(int(target[8:-1]), (int(pid), comm))
    return owners
