"""pcapng files of traced packets (`pyprobe trace --pcap FILE`), as tcpdump,
Wireshark and libpcap read them.

A packet is written once, with the bytes its first hop carried (at most
the program's snap: PYPROBE_TRACE_SNAP, and the linear part of the skb),
its length on the wire, and a comment saying how it ended and where it
went: Wireshark shows it as the packet's comment (`pkt_comment` in a
display filter). One interface, Ethernet: the program sees a packet from
its Ethernet header or, where it has none (tun devices, a packet not at a
device yet), from its IP header, and libpcap (tcpdump) refuses a file
whose interfaces differ in link type; such a packet gets a made-up
Ethernet header (zero addresses) and says so in its comment.

Format: https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-02.html
(SHB, IDB, EPB; nanosecond timestamps through if_tsresol).
"""

from __future__ import annotations

import struct
from typing import BinaryIO

LINKTYPE_ETHERNET = 1
_SHB, _IDB, _EPB = 0x0A0D0D0A, 0x00000001, 0x00000006
_BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END, _OPT_COMMENT, _IF_NAME, _IF_TSRESOL = 0, 1, 2, 9
SNAPLEN = 262144


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)


def _block(kind: int, body: bytes) -> bytes:
    size = 12 + len(body)
    return struct.pack("<II", kind, size) + body + struct.pack("<I", size)


class Writer:
    """Packets to a pcapng file: its header and its interface first, then
    one Enhanced Packet Block each."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        shb = struct.pack("<IHHq", _BYTE_ORDER_MAGIC, 1, 0, -1) + _option(_OPT_END, b"")
        out.write(_block(_SHB, shb))
        options = (
            _option(_IF_NAME, b"pyprobe")
            + _option(_IF_TSRESOL, bytes([9]))  # 10^-9 s: nanoseconds
            + _option(_OPT_END, b"")
        )
        out.write(_block(_IDB, struct.pack("<HHI", LINKTYPE_ETHERNET, 0, SNAPLEN) + options))
        self.written = 0

    def packet(self, ts_ns: int, data: bytes, wirelen: int, ethernet: bool, comment: str) -> None:
        if not ethernet:
            ethertype = 0x86DD if data and data[0] >> 4 == 6 else 0x0800
            data = bytes(12) + struct.pack("!H", ethertype) + data
            wirelen += 14
            comment += " (no link-layer header: this Ethernet header is made up)"
        header = struct.pack(
            "<IIIII",
            0,
            ts_ns >> 32,
            ts_ns & 0xFFFFFFFF,
            len(data),
            max(wirelen, len(data)),
        )
        options = b""
        if comment:
            options = _option(_OPT_COMMENT, comment.encode()) + _option(_OPT_END, b"")
        body = header + data + bytes(-len(data) % 4) + options
        self.out.write(_block(_EPB, body))
        self.written += 1

    def flush(self) -> None:
        self.out.flush()
