"""tcpretrans: decoding of retransmit and reset events."""

from __future__ import annotations

from typing import Any

from ..decoders import FAMILIES, inet_addr, netns_name, tcp_state
from ..probe import Probe
from ..registry import register
from ..render import hostport
from ..structs import (
    F_OWNER_KNOWN,
    TCP_RESET_RECEIVED,
    TCP_RESET_SENT,
    TCP_RETRANSMIT,
    TCP_SYNACK_RETRANSMIT,
    TcpEvent,
)
from .tcpstates import _MONO_TO_WALL

KINDS = {
    TCP_RETRANSMIT: "retransmit",
    TCP_SYNACK_RETRANSMIT: "synack_retransmit",
    TCP_RESET_SENT: "reset_sent",
    TCP_RESET_RECEIVED: "reset_received",
}


@register("tcpretrans")
class TcpRetrans(Probe):
    def decode(self, raw: bytes) -> dict[str, Any]:
        ev = TcpEvent.from_buffer_copy(raw)
        return {
            "time": ev.ts_ns / 1e9 + _MONO_TO_WALL,
            "kind": KINDS.get(ev.kind, str(ev.kind)),
            "skaddr": f"{ev.skaddr:#x}" if ev.skaddr else "",
            "pid": ev.pid,
            "comm": ev.comm.decode(errors="replace"),
            "owner_known": bool(ev.flags & F_OWNER_KNOWN),
            "netns": self.decoders.netns_inode(ev.netns),
            "netns_name": netns_name(self.decoders.netns_inode(ev.netns)),
            "family": FAMILIES.get(ev.family, ""),
            "saddr": inet_addr(ev.family, bytes(ev.saddr)),
            "sport": ev.sport,
            "daddr": inet_addr(ev.family, bytes(ev.daddr)),
            "dport": ev.dport,
            "state": tcp_state(ev.state),
            "reason": self.decoders.reset_reasons.get(ev.reason, str(ev.reason))
            if ev.kind == TCP_RESET_SENT
            else "",
            "segs": ev.segs,
        }

    HEADER = (
        f"{'EVENT':<17} {'PID':>7} {'COMM':<12} {'NETNS':<12} {'LADDR:LPORT':<22} "
        f"{'RADDR:RPORT':<22} {'STATE':<11} DETAIL"
    )

    def line(self, ev: dict[str, Any]) -> str:
        comm = ev["comm"] + ("" if ev["owner_known"] else "*")
        netns = ev["netns_name"] or str(ev["netns"] or "-")
        detail = ev["reason"] or (f"{ev['segs']} segs" if ev["segs"] else "")
        return (
            f"{ev['kind']:<17} {ev['pid']:>7} {comm[:12]:<12} {netns[:12]:<12} "
            f"{hostport(ev['saddr'], ev['sport']):<22} {hostport(ev['daddr'], ev['dport']):<22} "
            f"{ev['state']:<11} {detail}"
        )

    def totals(self) -> dict[str, int]:
        """retransmit segments, resets sent and received: all namespaces."""
        out = {}
        for spec in self.manifest.metrics:
            out[spec.name] = int(sum(v for _, v in self.samples(spec)))
        return out
