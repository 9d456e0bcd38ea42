"""Turn raw kernel numbers into the names people read (and label values)."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable

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


# Label decoders by the name used in manifests.
DECODERS: dict[str, Callable[[int], str]] = {"tcp_state": tcp_state, "uint": uint}
