"""Every device of a namespace with its own counters (struct
rtnl_link_stats64, what /sys/class/net/*/statistics and `ip -s link` show),
from one RTM_GETLINK dump decoded with struct, like tcstats.py.

The kernel counts these for every packet anyway: read at scrape time they
cost the workload nothing, where a hook on every packet cost it ~2-3% on
this kind of machine (bench/RESULTS.md)."""

from __future__ import annotations

import socket
import struct
import threading

from .namespaces import each_netns
from .tcstats import _HDR, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, _attrs

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
IFLA_IFNAME, IFLA_STATS64 = 3, 23
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
# struct rtnl_link_stats64, its first fields (the rest: errors by kind)
STATS = (
    "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "rx_errors", "tx_errors",
    "rx_dropped", "tx_dropped", "multicast", "collisions",
)  # fmt: skip
_STATS = struct.Struct("=" + "Q" * len(STATS))


def link_stats(kept: socket.socket | None = None) -> list[dict]:
    """Every device of the calling thread's namespace (or of the namespace
    `kept`, a socket opened there, belongs to): ifindex, name and the
    counters in STATS."""
    if kept is not None:
        with _KEPT_LOCK:  # one dump at a time on a shared socket
            return _dump(kept)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as nl:
        return _dump(nl)


def _dump(nl: socket.socket) -> list[dict]:
    out: list[dict] = []
    request = _IFINFO.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    nl.send(
        _HDR.pack(_HDR.size + len(request), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + request
    )
    while True:
        buf = nl.recv(1 << 16)
        if not buf:
            return out
        pos = 0
        while pos + _HDR.size <= len(buf):
            length, kind = _HDR.unpack_from(buf, pos)[:2]
            if kind == NLMSG_DONE:
                return out
            if kind == NLMSG_ERROR:
                (errno,) = struct.unpack_from("=i", buf, pos + _HDR.size)
                if errno:
                    raise OSError(-errno, "link dump failed")
                return out
            if kind == RTM_NEWLINK and length >= _HDR.size + _IFINFO.size:
                out.append(_link(buf, pos + _HDR.size, pos + length))
            if length == 0:
                return out
            pos += (length + 3) & ~3


def _link(buf: bytes, pos: int, end: int) -> dict:
    _family, _type, index, _flags, _change = _IFINFO.unpack_from(buf, pos)
    out: dict = {"ifindex": index, "device": str(index), **dict.fromkeys(STATS, 0)}
    for kind, start, stop in _attrs(buf, pos + _IFINFO.size, end):
        if kind == IFLA_IFNAME:
            out["device"] = buf[start:stop].rstrip(b"\0").decode(errors="replace")
        elif kind == IFLA_STATS64 and stop - start >= _STATS.size:
            out.update(zip(STATS, _STATS.unpack_from(buf, start), strict=True))
    return out


# Sockets opened in every namespace while we could enter them: a daemon that
# then drops its privileges (export --drop-privileges) may no longer setns()
# into another namespace, but a socket keeps the namespace it was made in, and
# dumping links needs no privilege.
_KEPT: dict[int, socket.socket] = {}
_KEPT_LOCK = threading.Lock()


def keep_namespaces() -> None:
    """Open a link socket in every namespace now, for later dumps there."""

    def opened() -> socket.socket:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)

    _KEPT.update(each_netns(opened))


def kept() -> dict[int, socket.socket]:
    return dict(_KEPT)
