"""The netlink side: network namespaces and sock_diag, through pyroute2.

A network namespace is named by its inode (what BPF sees) and, when it has
one, its name under /run/netns (what `ip netns` users know).
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from . import sockdiag
from .decoders import tcp_state
from .errors import PyprobeError
from .sockdiag import Sock

NETNS_RUN_DIR = Path("/run/netns")
T = TypeVar("T")
# Every TCP state, including request sockets (NEW_SYN_RECV, reported as SYN_RECV).
ALL_TCP_STATES = (1 << 13) - 1


def inode_of(path: str | Path) -> int:
    return os.stat(path).st_ino


def self_netns() -> int:
    """The calling thread's namespace (a thread may have entered another)."""
    return inode_of("/proc/thread-self/ns/net")


def named_netns() -> dict[int, str]:
    """inode -> name for the namespaces under /run/netns."""
    names: dict[int, str] = {}
    if NETNS_RUN_DIR.is_dir():
        for entry in sorted(NETNS_RUN_DIR.iterdir()):
            try:
                names[inode_of(entry)] = entry.name
            except OSError:
                continue  # a stale name whose namespace is gone
    return names


SO_NETNS_COOKIE = 71  # Linux 5.14+


def netns_cookie() -> int | None:
    """The current thread's namespace cookie (unique, never reused), or None
    on kernels that cannot say."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            raw = s.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8)
        except OSError:
            return None
    return int.from_bytes(raw, sys.byteorder)


def netns_paths(denied: list[str] | None = None) -> dict[int, list[str]]:
    """inode -> the paths that name it (/run/netns first, then /proc/PID/ns/net),
    for every namespace in use on the host. Paths we may not look at are
    appended to `denied`."""
    found: dict[int, list[str]] = {}
    candidates = [str(e) for e in NETNS_RUN_DIR.iterdir()] if NETNS_RUN_DIR.is_dir() else []
    candidates += [f"/proc/{pid}/ns/net" for pid in os.listdir("/proc") if pid.isdigit()]
    for path in candidates:
        try:
            found.setdefault(inode_of(path), []).append(path)
        except PermissionError:
            _deny(denied, path)
        except OSError:
            continue  # the process exited, or a stale name
    return found


def netns_label(inode: int, names: dict[int, str] | None = None) -> str:
    if not inode:
        return "-"
    name = (names if names is not None else named_netns()).get(inode)
    return name or str(inode)


def resolve_netns(spec: str) -> int:
    """An inode from "INODE" or a name under /run/netns."""
    if spec.isdigit():
        if int(spec) not in netns_paths():
            raise PyprobeError(
                f"unknown network namespace {spec}: no process or /run/netns name has it "
                "(lsns -t net lists them)"
            )
        return int(spec)
    path = NETNS_RUN_DIR / spec
    if "/" in spec or not path.exists():
        raise PyprobeError(
            f"unknown network namespace {spec!r}: not an inode and not in {NETNS_RUN_DIR}"
        )
    return inode_of(path)


def start_in_netns(path: str | Path, fn: Callable[[], None], name: str = "") -> threading.Thread:
    """Start fn in a thread that has entered the namespace at path.

    setns(CLONE_NEWNET) changes only the calling thread, so the rest of the
    process (and the BPF programs it holds) stay where they are; sockets
    created inside fn belong to that namespace.
    """
    return _enter(path, fn, name, None)


def _enter(
    path: str | Path, fn: Callable[[], None], name: str, failed: list[OSError] | None
) -> threading.Thread:
    from pyroute2.netns import setns

    def target() -> None:
        # The namespace can vanish (or be closed to us) between being listed
        # and being entered: a caller that collects failures learns why and
        # nothing is printed; for the others it stays the thread's error.
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                setns(fd, flags=0)
            finally:
                os.close(fd)
        except OSError as e:
            if failed is None:
                raise
            failed.append(e)
            return
        fn()

    t = threading.Thread(target=target, name=name or f"netns:{path}", daemon=True)
    t.start()
    return t


def run_in_netns(path: str | Path, fn: Callable[[], T]) -> T:
    """fn's result, computed inside the namespace at path."""
    result: list[T] = []
    error: list[BaseException] = []

    def call() -> None:
        try:
            result.append(fn())
        except BaseException as e:
            error.append(e)

    failed: list[OSError] = []
    _enter(path, call, "", failed).join()
    if failed:
        raise failed[0]  # PermissionError, FileNotFoundError...
    if error:
        raise error[0]
    if not result:
        raise OSError(f"could not enter network namespace {path}")
    return result[0]


def tcp_sockets() -> list[Sock]:
    """Every TCP socket of the caller's namespace: state and queues (like `ss -tan`)."""
    return sockdiag.tcp_sockets()


def tcp_state_counts(netns_path: str | Path | None = None) -> Counter[str]:
    """The `netstat -n | awk '/^tcp/ {++S[$NF]}'` count, for one namespace."""

    def count() -> Counter[str]:
        return Counter(tcp_state(s.state) for s in sockdiag.tcp_sockets())

    return count() if netns_path is None else run_in_netns(netns_path, count)


_SNAPSHOT: dict[str, object] = {"at": 0.0, "data": {}}
_SNAPSHOT_LOCK = threading.Lock()


def tcp_snapshot(max_age: float = 0.5) -> dict[int, list[tuple]]:
    """inode -> TCP sockets, for every namespace; one sock_diag pass shared by
    everything that asks within max_age seconds (e.g. one scrape's collectors)."""
    with _SNAPSHOT_LOCK:
        if time.monotonic() - float(_SNAPSHOT["at"]) > max_age:  # type: ignore[arg-type]
            _SNAPSHOT["data"] = each_netns(sockdiag.tcp_stats)
            _SNAPSHOT["at"] = time.monotonic()
        data: dict[int, list[tuple]] = _SNAPSHOT["data"]  # type: ignore[assignment]
        return data


def tcp_state_counts_by_netns(only: int | None = None) -> dict[int, Counter[str]]:
    """inode -> state counts, for every namespace (or just `only`)."""
    out: dict[int, Counter[str]] = {}
    for inode, records in tcp_snapshot().items():
        if only is None or inode == only:
            counts = Counter(r[0] for r in records)
            out[inode] = Counter({tcp_state(k): v for k, v in counts.items()})
    return out


def _in(path: str | Path | None, fn: Callable[[], T]) -> T:
    return fn() if path is None else run_in_netns(path, fn)


def links_and_cookie() -> tuple[dict[int, str], int | None]:
    """ifindex -> name and the namespace's cookie, in the current namespace."""
    return links(), netns_cookie()


def links(netns_path: str | Path | None = None) -> dict[int, str]:
    """ifindex -> name in one namespace (ifindexes repeat across namespaces)."""
    from pyroute2 import IPRoute

    def get() -> dict[int, str]:
        with IPRoute() as ipr:
            return {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}

    return _in(netns_path, get)


def qdiscs(
    netns_path: str | Path | None = None, names: Callable[[int], str] | None = None
) -> list[dict]:
    """Every qdisc of one namespace with its tc stats (like `tc -s qdisc`).
    Device names come from `names` (ifindex -> name) when the caller already
    has them, else from a link dump."""
    from pyroute2 import IPRoute

    def get() -> list[dict]:
        out = []
        with IPRoute() as ipr:
            if names is None:
                table = {m["index"]: m.get_attr("IFLA_IFNAME") for m in ipr.get_links()}
                name_of: Callable[[int], str] = lambda i: table.get(i, str(i))  # noqa: E731
            else:
                name_of = names
            for m in ipr.get_qdiscs():
                queue: dict[str, int] = {}
                basic: dict[str, int] = {}
                stats2 = m.get_attr("TCA_STATS2")
                if stats2 is not None:
                    queue = stats2.get_attr("TCA_STATS_QUEUE") or {}
                    basic = stats2.get_attr("TCA_STATS_BASIC") or {}
                out.append(
                    {
                        "ifindex": m["index"],
                        "device": name_of(m["index"]),
                        "kind": m.get_attr("TCA_KIND"),
                        "handle": f"{m['handle'] >> 16:x}:",
                        "root": m["parent"] == 0xFFFFFFFF,
                        "qlen": queue.get("qlen", 0),
                        "backlog": queue.get("backlog", 0),
                        "drops": queue.get("drops", 0),
                        "requeues": queue.get("requeues", 0),
                        "overlimits": queue.get("overlimits", 0),
                        "packets": basic.get("packets", 0),
                        "bytes": basic.get("bytes", 0),
                    }
                )
        return out

    return _in(netns_path, get)


def _deny(denied: list[str] | None, path: str) -> None:
    if denied is not None:
        denied.append(path)


def each_netns(
    fn: Callable[[], T], only: int | None = None, denied: list[str] | None = None
) -> dict[int, T]:
    """inode -> fn() run inside each namespace of the host (or just `only`);
    namespaces we may not enter (no CAP_SYS_ADMIN) are appended to `denied`."""
    result: dict[int, T] = {}
    own = self_netns()
    for inode, paths in netns_paths().items():
        if only is not None and inode != only:
            continue
        if inode == own:  # no setns (which needs CAP_SYS_ADMIN) into our own
            result[inode] = fn()
            continue
        # Some processes' namespace files may not be opened even by root (a
        # sandbox's init, say): any other path to the same namespace will do.
        for path in paths[:8]:
            try:
                result[inode] = run_in_netns(path, fn)
                break
            except PermissionError:
                continue
            except OSError:
                break  # the namespace went away while we looked
        else:
            _deny(denied, paths[0])
    return result


def socket_owners() -> dict[int, tuple[int, str]]:
    """socket inode -> (pid, comm) from /proc/*/fd, like `ss -p` (first owner wins)."""
    owners: dict[int, tuple[int, str]] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fd_dir = f"/proc/{pid}/fd"
        try:
            fds = os.listdir(fd_dir)
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
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


def link_stats(netns_path: str | Path | None = None) -> dict[str, dict[str, int]]:
    """name -> the device's own counters (rx_packets, tx_bytes, ...), as in
    /sys/class/net/NAME/statistics, for one namespace (IFLA_STATS64)."""
    from pyroute2 import IPRoute

    def get() -> dict[str, dict[str, int]]:
        with IPRoute() as ipr:
            return {
                m.get_attr("IFLA_IFNAME"): dict(m.get_attr("IFLA_STATS64") or {})
                for m in ipr.get_links()
            }

    return _in(netns_path, get)
