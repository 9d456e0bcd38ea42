"""Label decoders: map keys' numbers turned into the label values people read,
by the decoder names the manifests use (ebpf_exporter's idea): static ones,
those that read the running kernel (drop and reset reasons, softirq names,
symbols), and the netlink side's (device and namespace names)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from ..kernel.cgroups import Cgroups
from ..kernel.env import KernelEnv
from ..kernel.names import (
    SOFTIRQ_NAMES,
    eth_protocol,
    family,
    icmp_code,
    icmp_type,
    ip_protocol,
    ipv4_prefix24,
    kernel_names,
    route_result,
    route_table,
    tcp_state,
    uint,
)
from ..kernel.symbols import Symbols, kernel_symbols
from ..netns.links import TABLE, netns_name

# Label decoders by the name used in manifests.
DECODERS: dict[str, Callable[[int], str]] = {
    "tcp_state": tcp_state,
    "uint": uint,
    "eth_protocol": eth_protocol,
    "ip_protocol": ip_protocol,
    "icmp_type": icmp_type,
    "route_table": route_table,
    "route_result": route_result,
    "ipv4_prefix24": ipv4_prefix24,
    "address_family": family,
    "fdb_event": lambda v: {1: "learned", 2: "moved", 3: "updated", 4: "deleted"}.get(v, str(v)),
    "neigh_event": lambda v: {1: "created", 2: "failed", 3: "resolved"}.get(v, str(v)),
    "direction": lambda v: "receive" if v else "transmit",
    "queue_event": lambda v: (
        ("rcvqueue_full", "exceed_rmem", "exceed_wmem")[v] if v < 3 else str(v)
    ),
}


# A decoder with the whole key at hand (a device name needs its namespace too).
KeyDecoder = Callable[[int, Mapping[str, int]], str]


class Decoders:
    """Label decoders for one machine: the static ones plus those that read the
    running kernel (drop and reset reasons, softirq names, symbols) or the
    netlink side (device names per namespace, namespace names)."""

    def __init__(self, env: KernelEnv) -> None:
        self.env = env
        # Map keys hold namespace cookies (low 32 bits) instead of inodes;
        # set by the probe when it compiles the program that way.
        self.cookie_ids = False
        self._getters: dict[str, KeyDecoder] = {}

    @functools.cached_property
    def drop_reasons(self) -> dict[int, str]:
        return kernel_names(
            self.env, "skb:kfree_skb", "reason", "skb_drop_reason", "SKB_DROP_REASON_"
        )

    @functools.cached_property
    def reset_reasons(self) -> dict[int, str]:
        return kernel_names(
            self.env, "tcp:tcp_send_reset", "reason", "sk_rst_reason", "SK_RST_REASON_"
        )

    @functools.cached_property
    def softirqs(self) -> dict[int, str]:
        names = kernel_names(self.env, "irq:softirq_entry", "vec", "", "")
        return names or dict(enumerate(SOFTIRQ_NAMES))

    @functools.cached_property
    def cgroups(self) -> Cgroups:
        return shared_cgroups()

    def cgroup_text(self, cgroup_id: int, what: str) -> str:
        """A cgroup id as a path ("cgroup_path"), its container ("container":
        runtime:id, "" for none) or pod ("pod": namespace/name or UID)."""
        found = self.cgroups.get(cgroup_id) if cgroup_id else None
        if found is None:
            return str(cgroup_id) if cgroup_id and what == "cgroup_path" else ""
        return {"cgroup_path": found.path, "container": found.container, "pod": found.pod}[what]

    @property
    def symbols(self) -> Symbols:
        return kernel_symbols()

    def netns_inode(self, nid: int) -> int:
        """The inode of the namespace a map key's id names (0 when unknown)."""
        if not self.cookie_ids or not nid:
            return nid
        return TABLE.inode_of(nid)

    def netns_label(self, nid: int) -> str:
        if not nid:
            return ""
        inode = self.netns_inode(nid)
        # a namespace we cannot see (gone, or not ours to enter) keeps its id
        return str(inode) if inode else f"cookie:{nid}"

    def ifname(self, ifindex: int, nid: int) -> str:
        """A device's name in its namespace; the ifindex when it is gone."""
        if not ifindex:
            return "-"
        inode = self.netns_inode(nid)
        if self.cookie_ids and not TABLE.live(nid):
            # gone: its inode may be another namespace's now, with other devices
            return str(ifindex)
        return TABLE.get(inode, ifindex).get(ifindex) or str(ifindex)

    def ifname_in(self, inode: int, ifindex: int) -> str:
        """A device's name in the namespace with this inode (a live one)."""
        return TABLE.get(inode, ifindex).get(ifindex) or str(ifindex)

    def gone(self, nid: int, ifindex: int = 0) -> bool | None:
        """Whether a namespace (or a device in it) no longer exists: True or
        False, or None when we cannot tell (a namespace we may not enter, e.g.
        after dropping privileges; an unknown namespace, 0)."""
        if not nid:
            return None
        TABLE.fresh()
        inode = self.netns_inode(nid)
        alive = TABLE.live(nid) if self.cookie_ids else inode in TABLE.links
        if not alive:
            return True if TABLE.complete else None
        return bool(ifindex) and ifindex not in TABLE.links.get(inode, {})

    def get(self, name: str) -> KeyDecoder:
        found = self._getters.get(name)
        if found is None:
            found = self._getters[name] = self._getter(name)
        return found

    def _getter(self, name: str) -> KeyDecoder:
        if name in DECODERS:
            simple = DECODERS[name]
            return lambda v, _key: simple(v)
        if name == "drop_reason":
            return lambda v, _key: self.drop_reasons.get(v, f"REASON_{v}")
        if name == "reset_reason":
            return lambda v, _key: self.reset_reasons.get(v, f"REASON_{v}")
        if name == "softirq":
            return lambda v, _key: self.softirqs.get(v, f"VEC_{v}")
        if name == "ksym":
            return lambda v, _key: self.symbols.function(v)
        if name == "napi_device":
            # NAPI instances without a device: the per-CPU backlog of netif_rx().
            return lambda v, key: self.ifname(v, key.get("netns", 0)) if v else "backlog"
        if name == "ifname":
            return lambda v, key: self.ifname(v, key.get("netns", 0))
        if name == "netns":
            return lambda v, _key: self.netns_label(v)
        if name == "icmp_code":  # named by its type (the key's "type" member)
            return lambda v, key: icmp_code(key.get("type", 0), v)
        if name in ("cgroup_path", "container", "pod"):
            return lambda v, _key: self.cgroup_text(v, name)
        if name == "netns_name":
            return lambda v, _key: netns_name(self.netns_inode(v)) if v else ""
        raise KeyError(f"no decoder named {name!r}")


@functools.cache
def shared_cgroups() -> Cgroups:
    """One cgroup table for every probe's decoders (walked on a miss)."""
    return Cgroups()
