"""Consuming a BPF ring buffer from its memory map, a batch at a time.

bcc's ring_buffer_poll() hands each record to Python through a ctypes
callback: libbpf -> C trampoline -> Python frame -> string_at(), about
1.5 us per event before any decoding, which capped `pyprobe tcpstates -j`
near 95k events/s. Here the records are read straight from the mapping
(struct.unpack_from on the mmap), the consumer position is published once
per batch, and the reader blocks in epoll on the map's fd.

The layout is the kernel's (kernel/bpf/ringbuf.c, as libbpf reads it):
  offset 0           consumer position page (u64, writable by us)
  offset PAGE        producer position page (u64, read-only)
  offset 2*PAGE      the data pages, mapped twice in a row so that a record
                     that wraps is still contiguous
Each record: u32 len (bit 31 busy, bit 30 discarded), u32 page offset, then
the sample, padded to 8 bytes.

Python has no memory barriers, so this reader relies on x86's ordering
(loads are not reordered with loads, stores not with stores): available()
says whether it may be used; elsewhere bcc's callback path stays in place.
"""

from __future__ import annotations

import ctypes
import mmap
import operator
import platform
import select
import struct
import time
from collections.abc import Callable

from ..kernel.bpf import map_info
from ..kernel.record_runs import unpack_run

_BUSY, _DISCARD = 1 << 31, 1 << 30
_HDR = 8
# Positions are read with native formats (one memcpy: a single 8-byte load;
# "<Q" would go byte by byte). The consumer position is written through
# ctypes, one 8-byte store: struct.pack_into zero-fills its target first, and
# a producer that reads that 0 sees the ring as full and drops the event (it
# did, 20-140 times in 250k events, with the ring empty).
_POS = struct.Struct("@Q")
_LEN = struct.Struct("@I")
_FIRST = operator.itemgetter(0)
TICK = 0.05  # s: the longest a record waits when the program does not wake us
_BATCH = 4096  # records decoded before the space they held is given back
_GATHER_BYTES, _GATHER_S = 32768, 0.005  # see wait()


def available() -> bool:
    return platform.machine() in ("x86_64", "i686", "i386")


def map_size(fd: int) -> int:
    """A ring buffer map's data size in bytes (its max_entries)."""
    return int(map_info(fd).max_entries)


class RingReader:
    """One ring buffer. Records go to `callback` as bytes, in order; or, when
    every record is one fixed struct (`row`), a batch at a time to `on_rows`
    as tuples, unpacked by one struct.iter_unpack over the whole run."""

    def __init__(
        self,
        fd: int,
        callback: Callable[[bytes], None],
        row: struct.Struct | None = None,
        on_rows: Callable[[list[tuple]], None] | None = None,
    ) -> None:
        self.callback = callback
        self.fd = fd
        self.size = map_size(fd)
        self._takeover: Callable[[RingReader], int] | None = None
        self.mask = self.size - 1
        page = mmap.PAGESIZE
        self._page = page
        self._cons = mmap.mmap(fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._consumer = ctypes.c_uint64.from_buffer(self._cons)
        self.consumer = self._consumer  # for a reader taking over (ndjson.py)
        # The producer page and the data (twice) in one read-only mapping.
        self._data = mmap.mmap(
            fd, page + 2 * self.size, mmap.MAP_SHARED, mmap.PROT_READ, offset=page
        )
        self._epoll = select.epoll()
        self._epoll.register(fd, select.EPOLLIN)
        self._row: struct.Struct | None = None
        self._on_rows = on_rows
        if row is not None and on_rows is not None:
            self._sample = row.size
            stride = (row.size + _HDR + 7) & ~7
            # header (len, page offset) + the sample + its padding to 8 bytes
            self._row = struct.Struct(
                f"<I4x{row.format.lstrip('<>=!@')}{stride - _HDR - row.size}x"
            )
            assert self._row.size == stride

    def wait(self, timeout_ms: int) -> None:
        """Block until there are records or the timeout passes. The program
        wakes us only for a backlog (event_submit in pyprobe_bpf.h), so a few
        events are found by looking every TICK: they wait at most that."""
        deadline = time.monotonic() + timeout_ms / 1000
        while self.pending() == 0:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._epoll.poll(min(left, TICK))  # EINTR: retried (PEP 475)
        # A trickle is left to gather for a moment: a busy stream is then read
        # in batches of hundreds of records, not tens (each batch costs tens
        # of us in Python; under churn that was ~3,000 batches a second).
        if timeout_ms > 0 and self.pending() < _GATHER_BYTES:
            time.sleep(_GATHER_S)

    def pending(self) -> int:
        """Bytes written and not yet consumed."""
        return _POS.unpack_from(self._data, 0)[0] - self._consumer.value

    def take_over(self, consume: Callable[[RingReader], int] | None) -> None:
        """Let another reader consume this ring from now on (None: no more)."""
        self._takeover = consume

    def take_one(self) -> bytes | None:
        """The next record's sample, consumed; None when there is none yet or
        it was discarded. (For a reader that took over and hands one back.)"""
        got: list[bytes] = []
        callback, self.callback = self.callback, got.append
        try:
            self._one_by_one(stop_at_first=True)
        finally:
            self.callback = callback
        return got[0] if got else None

    def consume(self) -> int:
        """Hand every complete record over; how many records were passed
        (discarded ones included)."""
        if self._takeover is not None:
            return self._takeover(self)
        handed = 0
        while True:
            n = self._bulk() if self._row is not None else 0
            n += self._one_by_one(stop_at_first=self._row is not None)
            if not n:
                return handed
            handed += n

    def _bulk(self) -> int:
        """A run of fixed-size records, unpacked at once: stops before the
        first record that is busy, discarded or of another size."""
        assert self._row is not None and self._on_rows is not None
        data, row = self._data, self._row
        cons = self._consumer.value
        prod = _POS.unpack_from(data, 0)[0]
        count = min((prod - cons) // row.size, _BATCH)
        if count <= 0:
            return 0
        at = self._page + (cons & self.mask)
        # Unpacked in place, record after record, each one's header before its
        # sample (x86 keeps loads in order): a record whose header says done
        # has its sample complete. A copy first (bytes slicing, memcpy with
        # `rep movsb`) would not promise that order.
        rows: list[tuple] = []
        with memoryview(data) as whole:
            good = unpack_run(
                row, whole[at : at + count * row.size], count, _FIRST, self._sample, rows
            )
        if rows:
            self._on_rows(rows)
            self._consumer.value = cons + good * row.size
        return good

    def _one_by_one(self, stop_at_first: bool) -> int:
        data, consumer, callback = self._data, self._consumer, self.callback
        base, mask, unpack_len = self._page, self.mask, _LEN.unpack_from
        cons = consumer.value
        handed = 0
        try:
            while True:
                prod = _POS.unpack_from(data, 0)[0]
                if cons >= prod:
                    return handed
                batch = 0
                while cons < prod and batch < _BATCH:
                    at = base + (cons & mask)
                    length = unpack_len(data, at)[0]
                    if length & _BUSY:  # reserved, not yet submitted: later
                        return handed
                    size = length & ~_DISCARD
                    if not length & _DISCARD:
                        callback(data[at + _HDR : at + _HDR + size])
                    handed += 1
                    cons += (size + _HDR + 7) & ~7
                    batch += 1
                    if stop_at_first:
                        return handed
                consumer.value = cons
        finally:
            # Also when the callback raised: the records before that one are
            # consumed; it is handed over again at the next consume().
            consumer.value = cons

    def close(self) -> None:
        self._takeover = None
        del self._consumer, self.consumer  # exports of the mapping: they would keep it open
        self._epoll.close()
        self._data.close()
        self._cons.close()
