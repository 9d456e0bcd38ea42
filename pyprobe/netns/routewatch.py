"""Route and rule changes as they happen, in every namespace: rtnetlink's
multicast groups (RTMGRP_IPV4/IPV6_ROUTE, _RULE), what `ip monitor route`
and `ip monitor rule` print, one thread per namespace. No hook: the kernel
announces every change itself."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from pathlib import Path
from typing import Any

from ..kernel.names import ROUTE_TABLES
from . import rtnl
from .namespaces import start_in_netns

GROUPS = 0x40 | 0x400 | 0x80 | 0x40000  # IPv4/IPv6 routes, IPv4/IPv6 rules
FAMILIES = {2: "IPv4", 10: "IPv6"}
# rtm_type, rtm_protocol (uapi linux/rtnetlink.h)
TYPES = {1: "unicast", 2: "local", 3: "broadcast", 4: "anycast", 5: "multicast",
         6: "blackhole", 7: "unreachable", 8: "prohibit", 9: "throw", 10: "nat"}  # fmt: skip
PROTOS = {1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra",
          11: "zebra", 12: "bird", 16: "dhcp", 186: "bgp", 188: "ospf"}  # fmt: skip
ACTIONS = {1: "to_tbl", 2: "goto", 3: "nop", 6: "blackhole", 7: "unreachable", 8: "prohibit"}


def _prefix(addr: str | None, length: int, family: int, none: str = "default") -> str:
    if addr is None:
        return none if length == 0 else ""
    return f"{addr}/{length}" if length != (32 if family == 2 else 128) else addr


def change(msg: Any, names: dict[int, str]) -> dict[str, Any] | None:
    """One RTM_{NEW,DEL}{ROUTE,RULE} message as a change."""
    event = msg.get("event", "")
    kind = "route" if event.endswith("ROUTE") else "rule" if event.endswith("RULE") else ""
    if not kind:
        return None
    family = msg.get("family")
    table = msg.get_attr("RTA_TABLE" if kind == "route" else "FRA_TABLE") or msg.get("table")
    out: dict[str, Any] = {
        "event": "add" if event.startswith("RTM_NEW") else "del",
        "kind": kind,
        "family": FAMILIES.get(family, str(family)),
        "table": ROUTE_TABLES.get(table, str(table)),
    }
    if kind == "route":
        oif = msg.get_attr("RTA_OIF")
        out.update(
            dst=_prefix(msg.get_attr("RTA_DST"), msg.get("dst_len", 0), family),
            type=TYPES.get(msg.get("type"), str(msg.get("type"))),
            proto=PROTOS.get(msg.get("proto"), str(msg.get("proto"))),
            gateway=msg.get_attr("RTA_GATEWAY") or "",
            dev=names.get(oif, str(oif)) if oif else "",
        )
    else:
        out.update(
            src=_prefix(msg.get_attr("FRA_SRC"), msg.get("src_len", 0), family, "all"),
            dst=_prefix(msg.get_attr("FRA_DST"), msg.get("dst_len", 0), family, "all"),
            priority=msg.get_attr("FRA_PRIORITY") or 0,
            action=ACTIONS.get(msg.get("action"), str(msg.get("action"))),
        )
    return out


def watch(
    namespaces: dict[int, str | Path], out: queue.Queue, stop: threading.Event
) -> list[threading.Thread]:
    """A thread per namespace (inode -> path) putting (inode, time, change)
    on out until stop is set (each thread's `ready` is set once it listens).
    A thread blocks in the socket's read (pyroute2 buffers what it reads:
    a select() on its descriptor would miss what it already holds), so a
    closer thread ends them all when stop is set."""
    threads = []
    sockets: list[Any] = []
    lock = threading.Lock()
    for inode, path in namespaces.items():
        ready = threading.Event()

        def listen(inode: int = inode, ready: threading.Event = ready) -> None:
            ipr = rtnl.iproute()
            with lock:
                sockets.append(ipr)
            try:
                ipr.bind(groups=GROUPS)
                names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
                ready.set()
                while not stop.is_set():
                    for msg in ipr.get():
                        found = change(msg, names)
                        if found is not None:
                            out.put((inode, time.time(), found))
            except Exception:
                if not stop.is_set():  # closed by the closer: the end, not an error
                    raise
            finally:
                ready.set()

        t = start_in_netns(path, listen, name=f"routewatch:{inode}")
        t.ready = ready  # type: ignore[attr-defined]
        threads.append(t)

    def closer() -> None:
        stop.wait()
        with lock:
            for ipr in sockets:
                with contextlib.suppress(Exception):
                    ipr.close()

    threading.Thread(target=closer, name="routewatch-closer", daemon=True).start()
    return threads
