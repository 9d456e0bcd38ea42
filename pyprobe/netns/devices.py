"""Devices of a namespace, over netlink: names by ifindex, their own
counters (IFLA_STATS64) and qdiscs (tc stats)."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import rtnl, tcstats
from .namespaces import in_netns, netns_cookie


def links_and_cookie() -> tuple[dict[int, str], int | None]:
    """ifindex -> name and the namespace's cookie, in the current namespace."""
    return links(), netns_cookie()


def links(netns_path: str | Path | None = None) -> dict[int, str]:
    """ifindex -> name in one namespace (ifindexes repeat across namespaces).
    libc's if_nameindex(): one RTM_GETLINK dump decoded in C (pyroute2 took
    ~1.5 ms a namespace, and the link table is read in all of them)."""
    return in_netns(netns_path, lambda: dict(socket.if_nameindex()))


def qdiscs(
    netns_path: str | Path | None = None, names: Callable[[int], str] | None = None
) -> list[dict]:
    """Every qdisc of one namespace with its tc stats (like `tc -s qdisc`).
    Device names come from `names` (ifindex -> name) when the caller already
    has them, else from the namespace's link table."""

    def get() -> list[dict]:
        if names is None:
            table = dict(socket.if_nameindex())
            return tcstats.qdiscs(lambda i: table.get(i, str(i)))
        return tcstats.qdiscs(names)

    return in_netns(netns_path, get)


def link_stats(netns_path: str | Path | None = None) -> dict[str, dict[str, int]]:
    """name -> the device's own counters (rx_packets, tx_bytes, ...), as in
    /sys/class/net/NAME/statistics, for one namespace (IFLA_STATS64)."""

    def get() -> dict[str, dict[str, int]]:
        with rtnl.iproute() as ipr:
            return {
                m.get_attr("IFLA_IFNAME"): dict(m.get_attr("IFLA_STATS64") or {})
                for m in ipr.get_links()
            }

    return in_netns(netns_path, get)


IFF_TAP = 2  # IFLA_TUN_TYPE of a tap device (IFF_TUN, 1, for a tun one)


def link_kind(msg: Any) -> str:
    """A link message's kind (veth, bridge, vxlan, tun, tap...: netlink's
    IFLA_INFO_KIND; "" for one without: lo, a NIC). The tun driver reports
    "tun" for both of its modes: a tap is told apart by IFLA_TUN_TYPE."""
    info = msg.get_attr("IFLA_LINKINFO")
    kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
    if kind == "tun":
        data = info.get_attr("IFLA_INFO_DATA")
        if data is not None and data.get_attr("IFLA_TUN_TYPE") == IFF_TAP:
            return "tap"
    return str(kind)


def link_kinds(netns_path: str | Path | None = None) -> dict[int, str]:
    """ifindex -> the device's kind (link_kind) in one namespace."""

    def get() -> dict[int, str]:
        with rtnl.iproute() as ipr:
            return {m["index"]: link_kind(m) for m in ipr.get_links()}

    return in_netns(netns_path, get)
