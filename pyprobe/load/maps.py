"""Reading and pruning BPF maps through their file descriptors, with the
bpf() system call itself: no bcc, so a process that only reads maps (the
daemon, once a child has compiled and attached its programs) never loads
bcc, clang and LLVM (see load/compilers.py).

A map is read whole with BPF_MAP_LOOKUP_BATCH into buffers kept between
reads, and decoded with struct: bcc's items_lookup_batch() allocates
max_entries ctypes keys and values per call and makes a Python object per
entry, which is what a scrape spent most of its map-reading time on.
"""

from __future__ import annotations

import ctypes
import errno
import operator
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from ..kernel.bpf import (
    MAP_DELETE_ELEM,
    MAP_GET_NEXT_KEY,
    MAP_LOOKUP_BATCH,
    MAP_LOOKUP_ELEM,
    MAP_UPDATE_ELEM,
    bpf,
    map_info,
)

# A map key: an integer, or a struct's members in order (see MapLayout.key_fields).
Key = int | tuple[int, ...]

_FIRST_ROOM = 256  # entries a reader's buffers hold at first
_ARRAY_TYPES = (2, 6)  # BPF_MAP_TYPE_ARRAY, BPF_MAP_TYPE_PERCPU_ARRAY


class _ElemAttr(ctypes.Structure):
    _fields_ = [  # union bpf_attr, the BPF_MAP_*_ELEM commands
        ("map_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),  # or next_key
        ("flags", ctypes.c_uint64),
    ]


class _BatchAttr(ctypes.Structure):
    _fields_ = [  # union bpf_attr, the BPF_MAP_*_BATCH commands
        ("in_batch", ctypes.c_uint64),
        ("out_batch", ctypes.c_uint64),
        ("keys", ctypes.c_uint64),
        ("values", ctypes.c_uint64),
        ("count", ctypes.c_uint32),
        ("map_fd", ctypes.c_uint32),
        ("elem_flags", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


@dataclass(frozen=True)
class MapLayout:
    """What it takes to read a map from its fd alone: struct formats of its
    key and (one CPU's) value, pads included, and the members' names."""

    name: str
    key_fmt: str
    leaf_fmt: str
    ncpu: int  # values per key: the CPUs of a per-CPU map, else 1
    capacity: int
    key_fields: tuple[str, ...]  # () for an integer key
    leaf_fields: tuple[str, ...]  # () for an integer value


class MapReader:
    def __init__(self, fd: int, layout: MapLayout) -> None:
        self.fd, self.layout = fd, layout
        self.cap, self.ncpu = layout.capacity, layout.ncpu
        self.key = struct.Struct("=" + layout.key_fmt)
        self.leaf = struct.Struct("=" + layout.leaf_fmt)
        self.int_key = not layout.key_fields
        self.members = len(layout.leaf_fields)
        self.vsize = self.leaf.size * self.ncpu
        self.room = min(self.cap, _FIRST_ROOM)  # entries the buffers hold
        self.keys = ctypes.create_string_buffer(self.key.size * self.room)
        self.values = ctypes.create_string_buffer(self.vsize * self.room)
        self.batch_ops = True  # until the kernel says otherwise (EINVAL, ENOTSUPP)
        # One u64 per key (and CPU): summed and filtered as one flat array of
        # numbers, not a tuple per entry (a histogram array is mostly zeros).
        self.plain = not self.members and self.leaf.format == "=Q"

    def _room(self, entries: int) -> None:
        """Buffers for at least this many entries (at most the capacity).
        They grow as a map fills: sized for capacity up front, seven probes'
        buffers took ~50 MB that mostly stayed zeros."""
        entries = min(self.cap, max(entries, 2 * self.room))
        if entries > self.room:
            # New buffers, not ctypes.resize(): a resized array still reports
            # its old length to memoryview.
            keys = ctypes.create_string_buffer(self.key.size * entries)
            values = ctypes.create_string_buffer(self.vsize * entries)
            ctypes.memmove(keys, self.keys, self.key.size * self.room)
            ctypes.memmove(values, self.values, self.vsize * self.room)
            self.keys, self.values, self.room = keys, values, entries

    def _batch(self) -> int:
        """Every entry into the buffers; how many there are."""
        # The batch token is a bucket number for hash maps, a key for arrays.
        token = ctypes.create_string_buffer(max(8, self.key.size))
        attr = _BatchAttr(map_fd=self.fd, out_batch=ctypes.addressof(token))
        total = 0
        while total < self.cap:
            if total == self.room:
                self._room(total + 1)
            attr.in_batch = ctypes.addressof(token) if total else 0
            attr.keys = ctypes.addressof(self.keys) + self.key.size * total
            attr.values = ctypes.addressof(self.values) + self.vsize * total
            attr.count = self.room - total
            try:
                bpf(MAP_LOOKUP_BATCH, attr)
            except OSError as e:
                if e.errno == errno.ENOSPC and self.room < self.cap:
                    self._room(self.room + 1)  # a hash bucket bigger than the space left
                    continue
                if e.errno != errno.ENOENT:  # ENOENT: that was the last batch
                    raise
                return total + attr.count
            total += attr.count
            if attr.count == 0:
                break
        return total

    def _walk(self) -> int:
        """The same, key by key (kernels or map types without batch reads)."""
        total = 0
        attr = _ElemAttr(map_fd=self.fd)
        prev = ctypes.create_string_buffer(self.key.size)  # the key to go on from
        first = True
        while total < self.cap:
            if total == self.room:
                self._room(total + 1)
            at = ctypes.addressof(self.keys) + self.key.size * total
            attr.key, attr.value = (0 if first else ctypes.addressof(prev)), at
            try:
                bpf(MAP_GET_NEXT_KEY, attr)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                break  # the last key
            first = False
            ctypes.memmove(prev, at, self.key.size)
            attr.key, attr.value = at, ctypes.addressof(self.values) + self.vsize * total
            try:
                bpf(MAP_LOOKUP_ELEM, attr)
            except OSError as e:
                if e.errno != errno.ENOENT:
                    raise
                continue  # deleted between the two calls
            total += 1
        return total

    def count(self) -> int:
        """Entries in use (hash maps)."""
        return self._read_all()

    def _read_all(self) -> int:
        if self.batch_ops:
            try:
                return self._batch()
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOTSUP, 524):  # 524: ENOTSUPP
                    raise
                self.batch_ops = False
        return self._walk()

    def read(self, per_cpu: bool = False) -> dict[Key, int]:
        """key -> value, zero values left out.

        Per-CPU maps are summed over CPUs, or with per_cpu=True split: the CPU
        number is appended to the key. A struct value (several counters under
        one key, one map update per event) is split too: the member's index
        (see leaf_fields) is appended to the key, before the CPU. A key that
        exists reports every member, zeros included: a device that polled but
        never exhausted its budget has a budget-exhausted counter of 0, not none."""
        n = self._read_all()
        if self.plain:
            return self._read_plain(n, per_cpu)
        keys = self.key.iter_unpack(memoryview(self.keys)[: n * self.key.size])
        leaves = list(self.leaf.iter_unpack(memoryview(self.values)[: n * self.vsize]))
        ncpu, members = self.ncpu, self.members
        out: dict[Key, int] = {}
        for i, key in enumerate(keys):
            base: tuple = key
            cpus = leaves[i * ncpu : (i + 1) * ncpu]
            if not per_cpu and ncpu > 1:
                cpus = [tuple(map(sum, zip(*cpus, strict=True)))]
            for cpu, leaf in enumerate(cpus):
                tail = (cpu,) if per_cpu else ()
                if members:
                    if any(leaf):
                        for m, value in enumerate(leaf):
                            out[(*base, m, *tail)] = value
                elif leaf[0]:
                    if per_cpu or not self.int_key:
                        out[(*base, *tail)] = leaf[0]
                    else:
                        out[base[0]] = leaf[0]
        return out

    def _read_plain(self, n: int, per_cpu: bool) -> dict[Key, int]:
        ncpu, ksize = self.ncpu, self.key.size
        flat = memoryview(self.values).cast("B")[: n * self.vsize].cast("Q")
        if per_cpu:
            at = [i for i, v in enumerate(flat) if v]  # entry * ncpu + cpu
        else:
            values: Iterable[int] = flat[0::ncpu]
            for cpu in range(1, ncpu):
                values = map(operator.add, values, flat[cpu::ncpu])
            totals = list(values)
            at = [i for i, v in enumerate(totals) if v]
        out: dict[Key, int] = {}
        unpack = self.key.unpack_from
        for i in at:
            entry, cpu = divmod(i, ncpu) if per_cpu else (i, 0)
            key = unpack(self.keys, entry * ksize)
            value = flat[i] if per_cpu else totals[i]
            if per_cpu:
                out[(*key, cpu)] = value
            elif self.int_key:
                out[key[0]] = value
            else:
                out[key] = value
        return out

    def delete(self, keys: list[Key]) -> None:
        """Delete these keys (as read() gives them, without member or CPU); in
        an array, which cannot lose an element, zero them (every CPU's)."""
        buf = ctypes.create_string_buffer(self.key.size)
        attr = _ElemAttr(map_fd=self.fd, key=ctypes.addressof(buf))
        cmd = MAP_DELETE_ELEM
        if map_info(self.fd).type in _ARRAY_TYPES:
            zeros = ctypes.create_string_buffer(self.vsize)
            attr.value, cmd = ctypes.addressof(zeros), MAP_UPDATE_ELEM
        for k in keys:
            self.key.pack_into(buf, 0, *(k if isinstance(k, tuple) else (k,)))
            try:
                bpf(cmd, attr)
            except OSError as e:
                if e.errno != errno.ENOENT:  # gone already
                    raise
