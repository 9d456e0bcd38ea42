"""The names the kernel gives its numbers: TCP states, address families and
protocols, softirq vectors, and enums read from the running kernel (drop
and reset reasons) — never a hard-coded list where the kernel can say."""

from __future__ import annotations

import errno
import ipaddress
import re
import socket
import struct

from .env import KernelEnv

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


# ICMP (RFC 792) errors the kernel sends, by type; and the codes of the two
# types whose codes say why (uapi linux/icmp.h).
ICMP_TYPES = {3: "DEST_UNREACH", 4: "SOURCE_QUENCH", 5: "REDIRECT", 11: "TIME_EXCEEDED",
              12: "PARAMETERPROB"}  # fmt: skip
ICMP_CODES = {
    3: ("NET_UNREACH", "HOST_UNREACH", "PROT_UNREACH", "PORT_UNREACH", "FRAG_NEEDED",
        "SR_FAILED", "NET_UNKNOWN", "HOST_UNKNOWN", "HOST_ISOLATED", "NET_ANO", "HOST_ANO",
        "NET_UNR_TOS", "HOST_UNR_TOS", "PKT_FILTERED", "PREC_VIOLATION", "PREC_CUTOFF"),
    11: ("EXC_TTL", "EXC_FRAGTIME"),
}  # fmt: skip


def icmp_type(value: int) -> str:
    return ICMP_TYPES.get(value, str(value))


def icmp_code(icmp_type: int, value: int) -> str:
    """An error's code, named where its type's codes have names."""
    names = ICMP_CODES.get(icmp_type, ())
    return names[value] if value < len(names) else str(value)


# Routing tables by their ids (iproute2's /etc/iproute2/rt_tables).
ROUTE_TABLES = {253: "default", 254: "main", 255: "local"}
# A failed route lookup's -errno (net/ipv4/fib_semantics.c fib_props[]):
# no route in the table, or a route of type unreachable, prohibit, blackhole.
ROUTE_RESULTS = {
    -errno.EAGAIN: "no_route",
    -errno.EHOSTUNREACH: "unreachable",
    -errno.EACCES: "prohibit",
    -errno.EINVAL: "blackhole",
}


def route_table(value: int) -> str:
    return ROUTE_TABLES.get(value, str(value))


def route_result(value: int) -> str:
    """A lookup's -errno, whether the key's member reads signed or not."""
    value = value - (1 << 32) if value >= 1 << 31 else value
    return ROUTE_RESULTS.get(value, f"errno_{-value}")


def ipv4_prefix24(value: int) -> str:
    """A /24 kept in network byte order in a u32 (read little-endian)."""
    return f"{socket.inet_ntoa(struct.pack('<I', value & 0xFFFFFFFF))}/24"
