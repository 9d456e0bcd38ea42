"""A namespace's connection tracking over ctnetlink (pyroute2's NFCTSocket).
Its table's size against the limit and the per-CPU statistics conntrack -S
shows (those two from procfs: kernel/procfs.py conntrack_stats, 30 times
cheaper than a netlink socket per namespace per scrape), and the
connections that are NATed, each with the tuple as it left
(original) and as its replies come back (reply): SNAT and masquerade
rewrite the source, DNAT (a port forward) the destination, PAT the ports
too. No hook: the kernel keeps all of it."""

from __future__ import annotations

import socket
from collections import Counter
from typing import Any

from ..errors import PyprobeError
from . import rtnl

# include/uapi/linux/netfilter/nf_conntrack_common.h: enum ip_conntrack_status
IPS_SRC_NAT, IPS_DST_NAT = 1 << 4, 1 << 5
# enum tcp_conntrack
TCP_CT_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                 "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")  # fmt: skip
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}


def _tuple(msg: Any) -> dict[str, Any]:
    ip, proto = msg.get_attr("CTA_TUPLE_IP"), msg.get_attr("CTA_TUPLE_PROTO")
    src = ip.get_attr("CTA_IP_V4_SRC") or ip.get_attr("CTA_IP_V6_SRC")
    dst = ip.get_attr("CTA_IP_V4_DST") or ip.get_attr("CTA_IP_V6_DST")
    return {
        "src": src,
        "dst": dst,
        "sport": proto.get_attr("CTA_PROTO_SRC_PORT") or 0,
        "dport": proto.get_attr("CTA_PROTO_DST_PORT") or 0,
        "proto": PROTOCOLS.get(
            proto.get_attr("CTA_PROTO_NUM"), str(proto.get_attr("CTA_PROTO_NUM"))
        ),
    }


def nat_kind(status: int) -> str:
    kinds = [k for bit, k in ((IPS_SRC_NAT, "SNAT"), (IPS_DST_NAT, "DNAT")) if status & bit]
    return "+".join(kinds)


def entry(msg: Any) -> dict[str, Any]:
    """One connection: its original and reply tuples, NAT kind, TCP state."""
    orig, reply = _tuple(msg.get_attr("CTA_TUPLE_ORIG")), _tuple(msg.get_attr("CTA_TUPLE_REPLY"))
    status = int(msg.get_attr("CTA_STATUS") or 0)
    state = ""
    info = msg.get_attr("CTA_PROTOINFO")
    tcp = info.get_attr("CTA_PROTOINFO_TCP") if info is not None else None
    if tcp is not None:
        number = tcp.get_attr("CTA_PROTOINFO_TCP_STATE")
        state = TCP_CT_STATES[number] if number < len(TCP_CT_STATES) else str(number)
    return {
        "proto": orig["proto"],
        "nat": nat_kind(status),
        "state": state,
        "timeout": int(msg.get_attr("CTA_TIMEOUT") or 0),
        "zone": int(msg.get_attr("CTA_ZONE") or 0),
        "orig_src": orig["src"],
        "orig_sport": orig["sport"],
        "orig_dst": orig["dst"],
        "orig_dport": orig["dport"],
        "reply_src": reply["src"],
        "reply_sport": reply["sport"],
        "reply_dst": reply["dst"],
        "reply_dport": reply["dport"],
    }


def connections(nat_only: bool = True) -> list[dict[str, Any]]:
    """The calling thread's namespace's connections (only the NATed ones:
    a rewritten source or destination)."""
    try:
        # both families: IPv6 NAT (NPTv6, masquerade) too
        with rtnl.module().NFCTSocket(nfgen_family=socket.AF_UNSPEC) as ct:
            found = [entry(m) for m in ct.dump()]
    except (OSError, rtnl.module("pyroute2.netlink.exceptions").NetlinkError) as e:
        # not root (ctnetlink needs CAP_NET_ADMIN), or no conntrack in the kernel
        raise PyprobeError(f"conntrack over netlink: {e}") from None
    return [e for e in found if e["nat"] or not nat_only]


def zones() -> dict[int, int]:
    """The calling thread's namespace's tracked connections counted by
    conntrack zone (0: the default zone), from one ctnetlink dump."""
    return dict(sorted(Counter(c["zone"] for c in connections(nat_only=False)).items()))
