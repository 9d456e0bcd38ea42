"""Turn raw kernel numbers into the names people read (and label values)."""

from __future__ import annotations

import array
import bisect
import functools
import ipaddress
import itertools
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .kernel import KernelEnv

# include/net/tcp_states.h; these numbers are uapi-stable.
TCP_STATES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT1",
    5: "FIN_WAIT2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",
}
TCP_STATE_NUMBERS = {name: num for num, name in TCP_STATES.items()}
FAMILIES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def tcp_state(value: int) -> str:
    if value == 0:
        return "NONE"  # an event with no socket (e.g. a reset for a closed port)
    return TCP_STATES.get(value, f"UNKNOWN_{value}")


def uint(value: int) -> str:
    return str(value)


def inet_addr(family: int, raw: bytes) -> str:
    if family == socket.AF_INET:
        return str(ipaddress.IPv4Address(bytes(raw[:4])))
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return "?"


def endpoint(family: int, raw: bytes, port: int) -> str:
    addr = inet_addr(family, raw)
    return f"[{addr}]:{port}" if family == socket.AF_INET6 else f"{addr}:{port}"


def family(value: int) -> str:
    return FAMILIES.get(value, str(value))


ETH_PROTOCOLS = {0x0800: "IPv4", 0x86DD: "IPv6", 0x0806: "ARP", 0x8100: "VLAN", 0x88CC: "LLDP"}
IP_PROTOCOLS = {1: "ICMP", 6: "TCP", 17: "UDP", 58: "ICMPv6", 132: "SCTP"}


def eth_protocol(value: int) -> str:
    return ETH_PROTOCOLS.get(value, f"0x{value:04x}")


def ip_protocol(value: int) -> str:
    return IP_PROTOCOLS.get(value, str(value))


# Label decoders by the name used in manifests.
DECODERS: dict[str, Callable[[int], str]] = {
    "tcp_state": tcp_state,
    "uint": uint,
    "eth_protocol": eth_protocol,
    "ip_protocol": ip_protocol,
    "direction": lambda v: "receive" if v else "transmit",
    "queue_event": lambda v: (
        ("rcvqueue_full", "exceed_rmem", "exceed_wmem")[v] if v < 3 else str(v)
    ),
}


def print_symbolic(format_text: str, field: str) -> dict[int, str]:
    """{value: name} from a tracepoint format's __print_symbolic(REC->field, {1, "A"}, ...)."""
    start = format_text.find(f"__print_symbolic(REC->{field},")
    if start < 0:
        return {}
    depth, end = 0, len(format_text)
    for pos in range(start, len(format_text)):
        depth += {"(": 1, ")": -1}.get(format_text[pos], 0)
        if format_text[pos] == ")" and depth == 0:
            end = pos
            break
    pairs = re.findall(r'\{\s*(-?\d+)\s*,\s*"(\w+)"\s*\}', format_text[start:end])
    return {int(v): name for v, name in pairs}


def kernel_names(
    env: KernelEnv, tracepoint: str, field: str, enum: str, prefix: str
) -> dict[int, str]:
    """Names of an enum as the running kernel has them: the tracepoint's format
    file first (what the kernel prints), then BTF. Never a hard-coded list:
    values move between kernel versions."""
    if env.tracefs is not None:
        category, _, event = tracepoint.partition(":")
        try:
            text = (env.tracefs / "events" / category / event / "format").read_text()
        except OSError:
            text = ""
        names = print_symbolic(text.partition("print fmt:")[2], field)
        if names:
            return names
    btf = env.btf() if enum else None
    if btf is not None:
        try:
            return {v: n.removeprefix(prefix) for v, n in btf.enum(enum).items()}
        except Exception:
            pass
    return {}


_TEXT_SYMBOL = re.compile(rb"^([0-9a-f]+) [tTwW] (\S+)", re.M)


class Symbols:
    """Kernel addresses -> function names, from /proc/kallsyms (root sees addresses)."""

    def __init__(self, path: Path = Path("/proc/kallsyms")) -> None:
        try:
            text = path.read_bytes()
        except OSError:
            text = b""
        # One regex pass over the file, not a split per line (~120k lines:
        # 0.35 -> 0.2 s of the exporter's start-up).
        addrs = sorted(
            (int(addr, 16), name) for addr, name in _TEXT_SYMBOL.findall(text) if addr.strip(b"0")
        )
        # Packed: ~150k symbols as a list of ints and str took 13 MB of a
        # daemon's memory for life; as arrays and one blob, 3 MB.
        self._addrs = array.array("Q", (a for a, _ in addrs))
        self._ends = array.array("I", itertools.accumulate(len(n) for _, n in addrs))
        self._blob = b"".join(n for _, n in addrs)

    def _name_at(self, i: int) -> str:
        start = self._ends[i - 1] if i else 0
        return self._blob[start : self._ends[i]].decode(errors="replace")

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or not addr:
            return f"0x{addr:x}"
        return f"{self._name_at(i)}+0x{addr - self._addrs[i]:x}"

    def function(self, addr: int) -> str:
        return self.name(addr).partition("+")[0]


@functools.cache
def kernel_symbols() -> Symbols:
    """/proc/kallsyms, read once per process (~0.1 s; kernel text does not move)."""
    return Symbols()


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

    @property
    def symbols(self) -> Symbols:
        return kernel_symbols()

    def netns_inode(self, nid: int) -> int:
        """The inode of the namespace a map key's id names (0 when unknown)."""
        if not self.cookie_ids or not nid:
            return nid
        return _LINKS.inode_of(nid)

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
        if self.cookie_ids and not _LINKS.live(nid):
            # gone: its inode may be another namespace's now, with other devices
            return str(ifindex)
        return _LINKS.get(inode, ifindex).get(ifindex) or str(ifindex)

    def ifname_in(self, inode: int, ifindex: int) -> str:
        """A device's name in the namespace with this inode (a live one)."""
        return _LINKS.get(inode, ifindex).get(ifindex) or str(ifindex)

    def gone(self, nid: int, ifindex: int = 0) -> bool | None:
        """Whether a namespace (or a device in it) no longer exists: True or
        False, or None when we cannot tell (a namespace we may not enter, e.g.
        after dropping privileges; an unknown namespace, 0)."""
        if not nid:
            return None
        _LINKS.fresh()
        inode = self.netns_inode(nid)
        alive = _LINKS.live(nid) if self.cookie_ids else inode in _LINKS.links
        if not alive:
            return True if _LINKS.complete else None
        return bool(ifindex) and ifindex not in _LINKS.links.get(inode, {})

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
        if name == "netns_name":
            return lambda v, _key: netns_name(self.netns_inode(v)) if v else ""
        raise KeyError(f"no decoder named {name!r}")


# include/linux/interrupt.h order; only used when tracefs cannot be read.
SOFTIRQ_NAMES = (
    "HI",
    "TIMER",
    "NET_TX",
    "NET_RX",
    "BLOCK",
    "IRQ_POLL",
    "TASKLET",
    "SCHED",
    "HRTIMER",
    "RCU",
)


# Re-read the namespaces when a key names one we have not seen, at most this
# often (a namespace new since the last read; a dead one is pruned soon).
MISS_REFRESH = 0.1
HISTORY = 10_000  # gone namespaces remembered (their series are pruned soon)


class _Links:
    """ifindex -> name in every namespace and the namespaces' cookies, shared by
    all probes' decoders; re-read at most once a second, or MISS_REFRESH after
    a miss (entering every namespace costs ~1 ms each)."""

    def __init__(self) -> None:
        self.links: dict[int, dict[int, str]] = {}
        self.by_cookie: dict[int, int] = {}  # cookie's low 32 bits -> inode
        self.history: dict[int, int] = {}  # the same, for namespaces since gone
        self.at = 0.0
        self.complete = False  # every namespace could be entered
        self.lock = threading.Lock()

    def get(self, netns: int, ifindex: int) -> dict[int, str]:
        """The namespace's links; re-read when the device is unknown (at
        most every MISS_REFRESH)."""
        with self.lock:
            names = self.links.get(netns)
            if (names is None or ifindex not in names) and self.age() > MISS_REFRESH:
                self._refresh()
                names = self.links.get(netns)
            return names or {}

    def fresh(self) -> None:
        """Re-read when older than a second."""
        with self.lock:
            if self.age() > 1:
                self._refresh()

    def age(self) -> float:
        return time.monotonic() - self.at

    def inode_of(self, nid: int) -> int:
        """The inode of a live namespace's cookie, or of one that was alive
        (its series keep their label until pruned); 0 when never seen."""
        with self.lock:
            inode = self.by_cookie.get(nid, 0)
            if not inode and time.monotonic() - self.at > MISS_REFRESH:
                self._refresh()
                inode = self.by_cookie.get(nid, 0)
            return inode or self.history.get(nid, 0)

    def live(self, nid: int) -> bool:
        return nid in self.by_cookie

    def seen(self, found: dict[int, tuple[dict[int, str], int | None]], denied: bool) -> None:
        """Every namespace's links and cookie, read by a pass that visited
        them all anyway (tcpsummary's socket pass, taken just before a
        scrape): the scrape then finds the table fresh, not one more walk
        through the namespaces (~1.5 ms here)."""
        with self.lock:
            self._apply(found, denied)

    def _refresh(self) -> None:
        from . import netlink

        refused: list[str] = []
        found = netlink.each_netns(netlink.links_and_cookie, denied=refused)
        self._apply(found, bool(refused))

    def _apply(self, found: dict[int, tuple[dict[int, str], int | None]], denied: bool) -> None:
        links = {inode: links for inode, (links, _) in found.items()}
        if denied:
            # Namespaces we may no longer enter (privileges dropped): keep
            # what we knew of them; nothing is pruned on a partial view.
            links = {**self.links, **links}
        self.links = links
        self.by_cookie = {
            cookie & 0xFFFFFFFF: inode for inode, (_, cookie) in found.items() if cookie
        }
        self.history.update(self.by_cookie)
        while len(self.history) > HISTORY:
            del self.history[next(iter(self.history))]  # the oldest first
        self.at = time.monotonic()
        self.complete = not denied


_LINKS = _Links()


def links_seen(found: dict[int, tuple[dict[int, str], int | None]], denied: bool) -> None:
    """Every namespace's links and cookie (inode -> (ifindex -> name, cookie)),
    read by someone else's pass through them all (_Links.seen)."""
    _LINKS.seen(found, denied)


def read_namespaces() -> None:
    """Read every namespace's devices and cookie now (e.g. before dropping
    the privileges needed to enter them)."""
    with _LINKS.lock:
        _LINKS._refresh()


def netns_name(inode: int) -> str:
    """The name under /run/netns of a namespace inode, "" when it has none."""
    return _netns_names().get(inode, "")


def _netns_names() -> dict[int, str]:
    from . import netlink

    now = time.monotonic()
    if now - _NETNS_CACHE[0] > 1:
        _NETNS_CACHE[:] = [now, netlink.named_netns()]
    names: dict[int, str] = _NETNS_CACHE[1]
    return names


_NETNS_CACHE: list = [0.0, {}]
