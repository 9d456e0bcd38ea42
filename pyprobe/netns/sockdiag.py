"""TCP sockets from NETLINK_SOCK_DIAG, decoded at C-struct speed.

pyroute2's DiagSocket decodes each socket into nested message objects, about
40 µs apiece: 0.4 s a pass at 10k sockets, too slow for a scrape. We ask for
no extensions, so answers are nlmsghdr + inet_diag_msg (88 bytes, both
uapi) plus the few attributes every socket gets; runs of answers of one
length unpack with one struct.iter_unpack.
"""

from __future__ import annotations

import functools
import operator
import socket
import struct
from collections import Counter
from collections.abc import Callable
from typing import NamedTuple

from ..kernel.record_runs import unpack_run

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
TCPDIAG_GETSOCK = 18  # the old request: struct inet_diag_req, family AF_UNSPEC allowed
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
ALL_STATES = (1 << 13) - 1  # every TCP state, request sockets (NEW_SYN_RECV) included

# nlmsghdr (16) + inet_diag_req_v2 (56)
_REQ = struct.Struct("=IHHII BBBx I 48x")
# nlmsghdr (16) + inet_diag_req (60): family src_len dst_len ext, id, states, dbs
_REQ_V1 = struct.Struct("=IHHII BBBB 48x II")
# nlmsghdr (16) + inet_diag_msg (72): family state timer retrans, id{sport dport
# src[16] dst[16] if cookie[2]}, expires rqueue wqueue uid inode
_MSG = struct.Struct("=IHHII BBBB HH16s16sI8x IIIII")
_HDR = struct.Struct("=IHHII")
# The same 88 bytes, keeping only length, type, state, rqueue, wqueue: for counting,
# no bytes objects per socket (addresses are decoded only for top-N rows).
_LEAN = struct.Struct("=IH10x xB2x 48x 4x II 8x")  # (len, type, state, rq, wq)
assert _LEAN.size == _MSG.size
_HEAD = operator.itemgetter(0, 1)  # (length, type) of a record
_STATS = operator.itemgetter(2, 3, 4)  # (state, recv_q, send_q) of a lean one


# Fields of a raw record (a tuple from _MSG), by index.
FAMILY, STATE, SPORT, DPORT, SRC, DST, RECV_Q, SEND_Q, INODE = 5, 6, 9, 10, 11, 12, 15, 16, 18


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

    @classmethod
    def from_record(cls, r: tuple) -> Sock:
        # ports are big-endian on the wire
        return cls(
            r[FAMILY],
            r[STATE],
            _swap(r[SPORT]),
            _swap(r[DPORT]),
            r[SRC],
            r[DST],
            r[RECV_Q],
            r[SEND_Q],
            r[INODE],
        )


def tcp_sockets(families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> list[Sock]:
    """Every TCP socket of the calling thread's namespace (like `ss -tan`)."""
    return [Sock.from_record(r) for r in tcp_records(families)]


def tcp_stats(families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> Counter[tuple]:
    """(state, recv_q, send_q) -> how many TCP sockets: what the metrics
    aggregate. Counted a receive buffer at a time, so 100k sockets never
    exist as 100k tuples at once (a daemon's heap would keep that peak)."""
    counted: Counter[tuple] = Counter()
    tcp_records(families, lean=True, counted=counted)
    return counted


def tcp_records(
    families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6),
    lean: bool = False,
    counted: Counter[tuple] | None = None,
) -> list[tuple]:
    """The same as raw records (see the field indices above; lean: only
    (length, type, state, recv_q, send_q)), without building an object per socket.
    With `counted`, each buffer's (state, recv_q, send_q) are added to it
    instead, and nothing is returned."""
    out: list[tuple] = []
    fmt = _LEAN if lean else _MSG

    def each_buffer() -> None:
        if counted is not None:
            counted.update(map(_STATS, out))
            out.clear()

    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        if set(families) == {socket.AF_INET, socket.AF_INET6}:
            # Both families in one walk of the socket hash: the old TCPDIAG
            # request dumps AF_UNSPEC (~1-2 ms less per namespace).
            nl.send(
                _REQ_V1.pack(
                    _REQ_V1.size,
                    TCPDIAG_GETSOCK,
                    NLM_F_REQUEST | NLM_F_DUMP,
                    1,
                    0,
                    socket.AF_UNSPEC,
                    0,
                    0,
                    0,
                    ALL_STATES,
                    0,
                )
            )
            try:
                _read(nl, out, fmt, TCPDIAG_GETSOCK, each_buffer)
                return out
            except OSError:  # a kernel without the old request: one dump per family
                out.clear()
                if counted is not None:
                    counted.clear()
        for seq, family in enumerate(families, 2):
            nl.send(_dump_request(seq, family))
            _read(nl, out, fmt, SOCK_DIAG_BY_FAMILY, each_buffer)
    return out


def _dump_request(seq: int, family: int, ext: int = 0, states: int = ALL_STATES) -> bytes:
    """A SOCK_DIAG_BY_FAMILY dump request for TCP sockets of one family, in
    these states, with these extensions (INET_DIAG_* bits)."""
    return _REQ.pack(
        _REQ.size,
        SOCK_DIAG_BY_FAMILY,
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        0,
        family,
        socket.IPPROTO_TCP,
        ext,
        states,
    )


def _read(
    nl: socket.socket,
    out: list[tuple],
    fmt: struct.Struct,
    answer: int,
    each_buffer: Callable[[], None] = lambda: None,
) -> None:
    while True:
        buf = nl.recv(1 << 17)
        if not buf:
            return
        done = _parse(buf, out, fmt, answer)
        each_buffer()
        if done:
            return


def _parse(buf: bytes, out: list[tuple], fmt: struct.Struct, answer: int) -> bool:
    """One receive buffer's answers appended to out; True at the dump's end."""
    pos, end = 0, len(buf)
    while pos + _HDR.size <= end:
        length, kind = _HDR.unpack_from(buf, pos)[:2]
        if kind == NLMSG_DONE:
            return True
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", buf, pos + _HDR.size)
            if errno:
                raise OSError(-errno, "sock_diag dump failed")
            return True
        if length == 0:
            return True
        if kind == answer and length >= _MSG.size and length % 4 == 0:
            pos += _run(buf, pos, length, fmt, out, answer)
            continue
        if kind == answer and length >= _MSG.size:
            out.append(fmt.unpack_from(buf, pos))
        pos += (length + 3) & ~3
    return False


def _run(
    buf: bytes, pos: int, length: int, fmt: struct.Struct, out: list[tuple], answer: int
) -> int:
    """Unpack, in C, the answers of this same length from pos on (a buffer is
    mostly such a run: the attributes every socket gets make them 124 bytes
    for IPv4 here, not the bare 88); the bytes taken. Sockets of another
    length (TIME_WAIT, listeners) or NLMSG_DONE end a run."""
    view = memoryview(buf)[pos:]
    taken = unpack_run(
        _sized(fmt.format, length), view, len(view) // length, _HEAD, (length, answer), out
    )
    return taken * length


@functools.cache
def _sized(fmt: str, length: int) -> struct.Struct:
    """A record format stretched to a message length (attributes skipped)."""
    return struct.Struct(fmt + f"{length - _MSG.size}x")


def _swap(port: int) -> int:
    return ((port & 0xFF) << 8) | (port >> 8)


# struct tcp_info (uapi linux/tcp.h, append-only): the smoothed RTT and its
# mean deviation in µs, the congestion window in segments.
INET_DIAG_INFO = 2
TCP_ESTABLISHED = 1
_TCPI_RTT = struct.Struct("=II4xI")  # tcpi_rtt, tcpi_rttvar, (ssthresh), tcpi_snd_cwnd
_TCPI_RTT_AT = 68
_RTA = struct.Struct("=HH")


def tcp_rtts() -> list[tuple[int, int, int]]:
    """(srtt µs, rttvar µs, cwnd segments) of every established TCP socket of
    the calling thread's namespace, from tcp_info (what `ss -ti` prints as
    rtt:SRTT/RTTVAR cwnd:N). A dump of its own, asking for INET_DIAG_INFO:
    the kernel fills ~250 bytes more per socket, so only when asked."""
    out: list[tuple[int, int, int]] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        for seq, family in enumerate((socket.AF_INET, socket.AF_INET6), 2):
            nl.send(_dump_request(seq, family, 1 << (INET_DIAG_INFO - 1), 1 << TCP_ESTABLISHED))
            while not _rtts_of(nl.recv(1 << 17), out):
                pass
    return out


def _rtts_of(buf: bytes, out: list[tuple[int, int, int]]) -> bool:
    """One buffer's sockets' tcp_info read into out; True at the dump's end."""
    pos, end = 0, len(buf)
    if not buf:
        return True
    while pos + _HDR.size <= end:
        length, kind = _HDR.unpack_from(buf, pos)[:2]
        if kind == NLMSG_DONE or length == 0:
            return True
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", buf, pos + _HDR.size)
            if errno:
                raise OSError(-errno, "sock_diag dump failed")
            return True
        attr, stop = pos + _MSG.size, pos + length
        while attr + _RTA.size <= stop:
            size, kind = _RTA.unpack_from(buf, attr)
            if size < _RTA.size:
                break
            if kind == INET_DIAG_INFO and size >= _RTA.size + _TCPI_RTT_AT + _TCPI_RTT.size:
                out.append(_TCPI_RTT.unpack_from(buf, attr + _RTA.size + _TCPI_RTT_AT))
                break
            attr += (size + 3) & ~3
        pos += (length + 3) & ~3
    return False
