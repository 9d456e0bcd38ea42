"""Parsing sock_diag answers: runs of equal-length records unpacked in C,
broken anywhere by records of another length (TIME_WAIT sockets, listeners)."""

from __future__ import annotations

import struct

from pyprobe.netns import sockdiag

ANSWER = sockdiag.TCPDIAG_GETSOCK
DONE = sockdiag.NLMSG_DONE


def record(length: int, state: int, rq: int, wq: int) -> bytes:
    """An answer of `length` bytes: header, inet_diag_msg, then padding
    standing in for the attributes."""
    body = sockdiag._MSG.pack(
        length, ANSWER, 2, 1, 0, 2, state, 0, 0, 1, 2, b"", b"", 0, 0, rq, wq, 0, 0
    )
    return body + b"\0" * (length - len(body))


class OneBuffer:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, _size: int) -> bytes:
        data, self.data = self.data, b""
        return data


def parse(data: bytes) -> list[tuple]:
    out: list[tuple] = []
    sockdiag._read(OneBuffer(data), out, sockdiag._LEAN, ANSWER)  # type: ignore[arg-type]
    return [sockdiag._STATS(r) for r in out]


def test_mixed_lengths_in_any_order_come_out_whole_and_in_order():
    lengths = [124] * 50 + [88] + [124] * 3 + [96, 88] * 20 + [124] * 500
    expected = [(1 + i % 11, i, 2 * i) for i in range(len(lengths))]
    data = b"".join(record(n, *e) for n, e in zip(lengths, expected, strict=True))
    done = struct.pack("=IHHIIi", 20, DONE, 2, 1, 0, 0)
    assert parse(data + done) == expected


def test_a_run_broken_often_is_not_unpacked_again_and_again(monkeypatch):
    """At each break the rest of the buffer was unpacked whole and cut: with
    sockets of two lengths alternating, quadratic (81 ms for 13k sockets)."""
    unpacked = 0
    real = sockdiag._sized

    class Counting:
        def __init__(self, fmt: struct.Struct) -> None:
            self.fmt, self.size = fmt, fmt.size

        def iter_unpack(self, view):
            nonlocal unpacked
            unpacked += len(view) // self.fmt.size
            return self.fmt.iter_unpack(view)

    monkeypatch.setattr(sockdiag, "_sized", lambda fmt, length: Counting(real(fmt, length)))
    lengths = [124, 124, 88] * 1000
    data = b"".join(record(n, 1, i, 0) for i, n in enumerate(lengths))
    assert len(parse(data)) == 3000
    assert unpacked <= 8 * 3000  # at most a first chunk (8) per run; the whole rest was 3000 each
