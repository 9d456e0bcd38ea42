"""Network namespaces: named by inode (what BPF sees) and, when it has one,
by its name under /run/netns (what `ip netns` users know); listed, resolved
and entered, one thread at a time (setns changes only the calling thread).

The host's namespaces are found under the host paths (kernel/host.py):
--path.rootfs's /run/netns and every process of --path.procfs; the namespace
a thread is in is its own /proc/thread-self's.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from ..errors import PyprobeError
from ..kernel.host import host
from . import rtnl

NETNS_RUN_DIR = Path("/run/netns")  # this process's own: where `ip netns add` (the lab) names one
T = TypeVar("T")


def inode_of(path: str | Path) -> int:
    return os.stat(path).st_ino


def self_netns() -> int:
    """The calling thread's namespace (a thread may have entered another)."""
    return inode_of("/proc/thread-self/ns/net")


def named_netns() -> dict[int, str]:
    """inode -> name for the namespaces under the host's /run/netns."""
    names: dict[int, str] = {}
    run_dir = host().netns_dir
    if run_dir.is_dir():
        for entry in sorted(run_dir.iterdir()):
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
    """inode -> the paths that name it (/run/netns first, then /proc/PID/ns/net,
    under the host paths), for every namespace in use on the host. Paths we
    may not look at are appended to `denied`."""
    found: dict[int, list[str]] = {}
    run_dir, proc = host().netns_dir, host().procfs
    names = [str(e) for e in run_dir.iterdir()] if run_dir.is_dir() else []
    links = [f"{proc}/{pid}/ns/net" for pid in os.listdir(proc) if pid.isdigit()]
    for path, link in (*((n, False) for n in names), *((p, True) for p in links)):
        try:
            inode = _ns_inode(path, link)
        except PermissionError:
            _deny(denied, path)
            continue
        except OSError:
            continue  # the process exited, or a stale name
        found.setdefault(inode, []).append(path)
    return found


def _ns_inode(path: str, link: bool) -> int:
    # A process's link reads "net:[INODE]": a third of a stat()'s cost, and a
    # scrape looks at every process. Names under /run/netns are bind mounts,
    # not links: those are stat()ed.
    if link:
        target = os.readlink(path)
        if target.startswith("net:[") and target[5:-1].isdigit():
            return int(target[5:-1])
    return inode_of(path)


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
    path = host().netns_dir / spec
    if "/" in spec or not path.exists():
        raise PyprobeError(
            f"unknown network namespace {spec!r}: not an inode and not in {host().netns_dir}"
        )
    return inode_of(path)


def start_in_netns(
    path: str | Path, fn: Callable[[], None], name: str = "", failed: list[OSError] | None = None
) -> threading.Thread:
    """Start fn in a thread that has entered the namespace at path.

    setns(CLONE_NEWNET) changes only the calling thread, so the rest of the
    process (and the BPF programs it holds) stay where they are; sockets
    created inside fn belong to that namespace. Given failed, a namespace
    that cannot be entered is added there (fn does not run).
    """
    return _enter(path, fn, name, failed)


def _enter(
    path: str | Path, fn: Callable[[], None], name: str, failed: list[OSError] | None
) -> threading.Thread:
    def target() -> None:
        # The namespace can vanish (or be closed to us) between being listed
        # and being entered: a caller that collects failures learns why and
        # nothing is printed; for the others it stays the thread's error.
        try:
            _setns(path)
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


def in_netns(path: str | Path | None, fn: Callable[[], T]) -> T:
    """fn() in the namespace at path, or here when path is None."""
    return fn() if path is None else run_in_netns(path, fn)


def _deny(denied: list[str] | None, path: str) -> None:
    if denied is not None:
        denied.append(path)


EACH_NETNS_THREADS = 4  # namespaces visited at once


def each_netns(
    fn: Callable[[], T], only: int | None = None, denied: list[str] | None = None
) -> dict[int, T]:
    """inode -> fn() run inside each namespace of the host (or just `only`);
    namespaces we may not enter (no CAP_SYS_ADMIN) are appended to `denied`.

    Several namespaces are visited at once, each in a thread that entered it:
    what fn does there is mostly system calls (socket walks, netlink dumps)
    that run in parallel on several CPUs (10k sockets in 2 namespaces: 12 ms
    one after the other, ~7 ms at once)."""
    own = self_netns()
    jobs = [
        (inode, paths)
        for inode, paths in netns_paths().items()
        if (only is None or inode == only) and inode != own
    ]
    result: dict[int, T] = {}
    errors: list[BaseException] = []
    refused: list[str] = []

    def visit(inode: int, paths: list[str]) -> None:
        # Some processes' namespace files may not be opened even by root (a
        # sandbox's init, say): any other path to the same namespace will do.
        for path in paths[:8]:
            try:
                _setns(path)
                result[inode] = fn()
                return
            except PermissionError:
                continue
            except OSError:
                return  # the namespace went away while we looked
            except BaseException as e:
                errors.append(e)
                return
        refused.append(paths[0])

    # A thread per namespace, never reused for another: libraries keep
    # per-thread state (pyroute2's sockets) that must not cross namespaces.
    slots = threading.BoundedSemaphore(EACH_NETNS_THREADS)

    def run(inode: int, paths: list[str]) -> None:
        try:
            visit(inode, paths)
        finally:
            slots.release()

    threads = []
    for job in jobs:
        slots.acquire()
        threads.append(threading.Thread(target=run, args=job, name="netns", daemon=True))
        threads[-1].start()
    if only is None or only == own:  # no setns (which needs CAP_SYS_ADMIN) into our own
        result[own] = fn()
    for t in threads:
        t.join()
    for path in refused:
        _deny(denied, path)
    if errors:
        raise errors[0]
    return dict(sorted(result.items()))


def _setns(path: str | Path) -> None:
    """Move the calling thread into the network namespace at path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        rtnl.setns(fd)
    finally:
        os.close(fd)
