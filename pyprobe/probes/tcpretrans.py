"""tcpretrans: the stream's line (retransmits and resets, one per line)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..core.probe import Probe, plugin
from ..core.text import hostport, netns_cell


@plugin("tcpretrans")
class TcpRetrans(Probe):
    HEADER = (
        f"{'EVENT':<17} {'PID':>7} {'COMM':<12} {'NETNS':<12} {'LADDR:LPORT':<22} "
        f"{'RADDR:RPORT':<22} {'STATE':<11} DETAIL"
    )

    def line(self, ev: Mapping[str, Any]) -> str:
        comm = ev["comm"] + ("" if ev["owner_known"] else "*")
        netns = netns_cell(ev)
        detail = ev["reason"] or (f"{ev['segs']} segs" if ev["segs"] else "")
        return (
            f"{ev['kind']:<17} {ev['pid']:>7} {comm[:12]:<12} {netns[:12]:<12} "
            f"{hostport(ev['saddr'], ev['sport']):<22} {hostport(ev['daddr'], ev['dport']):<22} "
            f"{ev['state']:<11} {detail}"
        )
