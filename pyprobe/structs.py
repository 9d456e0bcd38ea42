"""ctypes mirrors of bpf/pyprobe.h (tests compare every field with gcc's view)."""

import ctypes

COMM_LEN = 16
TCP_STATE_SLOTS = 16
F_OWNER_KNOWN = 0x1
F_DELTA_KNOWN = 0x2
F_LIFE_KNOWN = 0x8
F_BYTES_KNOWN = 0x10
F_HAS_TUPLE = 0x4


class TcpStateEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("skaddr", ctypes.c_uint64),
        ("delta_ns", ctypes.c_uint64),
        ("life_ns", ctypes.c_uint64),
        ("rx_bytes", ctypes.c_uint64),
        ("tx_bytes", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("oldstate", ctypes.c_uint8),
        ("newstate", ctypes.c_uint8),
        ("flags", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
        ("_pad", ctypes.c_uint32),
    ]


class DropEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("location", ctypes.c_uint64),
        ("skaddr", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("ifindex", ctypes.c_uint32),
        ("reason", ctypes.c_uint32),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("protocol", ctypes.c_uint16),
        ("family", ctypes.c_uint8),
        ("l4proto", ctypes.c_uint8),
        ("flags", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
        ("_pad", ctypes.c_uint32),
    ]


TCP_RETRANSMIT, TCP_SYNACK_RETRANSMIT, TCP_RESET_SENT, TCP_RESET_RECEIVED = 1, 2, 3, 4


class TcpEvent(ctypes.Structure):
    _fields_ = [
        ("ts_ns", ctypes.c_uint64),
        ("skaddr", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("netns", ctypes.c_uint32),
        ("saddr", ctypes.c_uint8 * 16),
        ("daddr", ctypes.c_uint8 * 16),
        ("sport", ctypes.c_uint16),
        ("dport", ctypes.c_uint16),
        ("family", ctypes.c_uint16),
        ("kind", ctypes.c_uint8),
        ("state", ctypes.c_uint8),
        ("reason", ctypes.c_uint32),
        ("segs", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


# Struct name in pyprobe.h -> mirror; the manifests' [event].struct refers to these.
STRUCTS: dict[str, type[ctypes.Structure]] = {
    "tcpstate_event": TcpStateEvent,
    "drop_event": DropEvent,
    "tcp_event": TcpEvent,
}
