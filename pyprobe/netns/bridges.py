"""A namespace's bridges as `bridge link` and `bridge fdb` show them, over
rtnetlink (pyroute2): each port with its STP state, and each forwarding
database entry with its port, VLAN, kind and age."""

from __future__ import annotations

from typing import Any

from . import rtnl

USER_HZ = 100  # NDA_CACHEINFO's unit (clock_t)
# BR_STATE_* (uapi linux/if_bridge.h)
STP_STATES = ("disabled", "listening", "learning", "forwarding", "blocking")
NUD_PERMANENT, NUD_NOARP = 0x80, 0x40
NTF_SELF, NTF_MASTER = 0x02, 0x04


def ports() -> dict[int, dict[str, Any]]:
    """ifindex -> {name, bridge (its master's name), stp_state} of every
    bridge port of the calling thread's namespace, and the bridges too."""
    with rtnl.iproute() as ipr:
        links = list(ipr.get_links())
    names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in links}
    out: dict[int, dict[str, Any]] = {}
    for link in links:
        info = link.get_attr("IFLA_LINKINFO")
        kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
        slave = info.get_attr("IFLA_INFO_SLAVE_KIND") if info is not None else None
        if kind == "bridge":
            out[link["index"]] = {"name": names[link["index"]], "bridge": None, "stp_state": ""}
        elif slave == "bridge":
            data = info.get_attr("IFLA_INFO_SLAVE_DATA")
            state = data.get_attr("IFLA_BRPORT_STATE") if data is not None else None
            out[link["index"]] = {
                "name": names[link["index"]],
                "bridge": names.get(link.get_attr("IFLA_MASTER")),
                "stp_state": STP_STATES[state] if state is not None and state < 5 else "",
            }
    return out


def fdb() -> list[dict[str, Any]]:
    """Every bridge forwarding database entry of the calling thread's
    namespace (`bridge fdb show`): mac, vlan, port, bridge, kind (learned,
    static, permanent), seconds since last used and updated."""
    known = ports()
    with rtnl.iproute() as ipr:
        entries = list(ipr.fdb("dump"))
    out = []
    for e in entries:
        port = known.get(e["ifindex"])
        if port is None or (e.get_attr("NDA_MASTER") is None and port["bridge"] is not None):
            # not a bridge's: a port's own table (a vxlan's remote VTEPs, NTF_SELF)
            continue
        bridge = port["bridge"] or port["name"]
        state = e["state"]
        cache = e.get_attr("NDA_CACHEINFO") or {}
        kind = (
            "permanent" if state & NUD_PERMANENT else "static" if state & NUD_NOARP else "learned"
        )
        out.append(
            {
                "bridge": bridge,
                "port": port["name"] if port["bridge"] else "",
                "mac": e.get_attr("NDA_LLADDR"),
                "vlan": e.get_attr("NDA_VLAN") or 0,
                "kind": kind,
                "self": bool(e["flags"] & NTF_SELF),
                "stp_state": port["stp_state"],
                "used_s": cache.get("ndm_used", 0) / USER_HZ,
                "updated_s": cache.get("ndm_updated", 0) / USER_HZ,
            }
        )
    return out
