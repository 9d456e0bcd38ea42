"""TCP sockets from NETLINK_SOCK_DIAG, decoded at C-struct speed.

pyroute2's DiagSocket decodes each socket into nested message objects, about
40 µs apiece: 0.4 s a pass at 10k sockets, too slow for a scrape. We ask for
no extensions, so every answer is a fixed 88 bytes (nlmsghdr +
inet_diag_msg, both uapi) and a whole recv() buffer unpacks with one
struct.iter_unpack. Everything else netlink stays with pyroute2.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
ALL_STATES = (1 << 13) - 1  # every TCP state, request sockets (NEW_SYN_RECV) included

# nlmsghdr (16) + inet_diag_req_v2 (56)
_REQ = struct.Struct("=IHHII BBBx I 48x")
# nlmsghdr (16) + inet_diag_msg (72): family state timer retrans, id{sport dport
# src[16] dst[16] if cookie[2]}, expires rqueue wqueue uid inode
_MSG = struct.Struct("=IHHII BBBB HH16s16sI8x IIIII")
_HDR = struct.Struct("=IHHII")


class Sock(NamedTuple):
    family: int
    state: int
    sport: int
    dport: int
    src: bytes  # 16 bytes; IPv4 in the first 4
    dst: bytes
    recv_q: int
    send_q: int
    inode: int


def tcp_sockets(families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> list[Sock]:
    """Every TCP socket of the calling thread's namespace (like `ss -tan`)."""
    out: list[Sock] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for seq, family in enumerate(families, 1):
            nl.send(
                _REQ.pack(
                    _REQ.size,
                    SOCK_DIAG_BY_FAMILY,
                    NLM_F_REQUEST | NLM_F_DUMP,
                    seq,
                    0,
                    family,
                    socket.IPPROTO_TCP,
                    0,
                    ALL_STATES,
                )
            )
            _read(nl, out)
    return out


def _read(nl: socket.socket, out: list[Sock]) -> None:
    size = _MSG.size
    while True:
        buf = nl.recv(1 << 17)
        if not buf:
            return
        pos = 0
        # Fast path: a run of fixed-size socket messages.
        while pos + size <= len(buf):
            length, kind = _HDR.unpack_from(buf, pos)[:2]
            if kind != SOCK_DIAG_BY_FAMILY or length != size:
                break
            (_, _, _, _, _, fam, state, _, _, sport, dport, src, dst, _, _, rq, wq, _, ino) = (
                _MSG.unpack_from(buf, pos)
            )
            # ports are big-endian on the wire
            out.append(Sock(fam, state, _swap(sport), _swap(dport), src, dst, rq, wq, ino))
            pos += size
        while pos + _HDR.size <= len(buf):
            length, kind = _HDR.unpack_from(buf, pos)[:2]
            if kind == NLMSG_DONE:
                return
            if kind == NLMSG_ERROR:
                (errno,) = struct.unpack_from("=i", buf, pos + _HDR.size)
                if errno:
                    raise OSError(-errno, "sock_diag dump failed")
                return
            if kind == SOCK_DIAG_BY_FAMILY and length >= size:
                (_, _, _, _, _, fam, state, _, _, sport, dport, src, dst, _, _, rq, wq, _, ino) = (
                    _MSG.unpack_from(buf, pos)
                )
                out.append(Sock(fam, state, _swap(sport), _swap(dport), src, dst, rq, wq, ino))
            pos += (length + 3) & ~3
            if length == 0:
                return


def _swap(port: int) -> int:
    return ((port & 0xFF) << 8) | (port >> 8)
