"""bpfmaps: maps read through their fds with our own bpf() calls, checked
against bcc's reading of the same maps. Batch reads, the key-by-key walk
(kernels without batch ops), buffers that grow past their first room,
per-CPU values, struct keys and values, deletes."""

from __future__ import annotations

import ctypes

import pytest

from pyprobe.load import maps
from pyprobe.load.layouts import layout_of
from pyprobe.load.maps import MapReader

pytestmark = [pytest.mark.root, pytest.mark.kernel]

PROGRAM = b"""
struct key_t { u32 netns; u16 port; u8 proto; };
struct val_t { u64 packets; u64 bytes; };
BPF_HASH(plain, u32, u64, 5000);
BPF_PERCPU_HASH(per_cpu, struct key_t, struct val_t, 5000);
BPF_ARRAY(slots, u64, 300);
BPF_PERCPU_ARRAY(cpu_slots, u64, 1024);
BPF_PERCPU_HASH(cpu_pairs, struct key_t, u64, 100);
struct grid_t { u64 n; u64 cells[2][8]; };
BPF_HASH(grid, u32, struct grid_t, 4);  /* bcc mirrors cells as u64[2] */
struct row_t { u64 n; u64 cells[16]; };
BPF_PERCPU_HASH(rows, u32, struct row_t, 4);
int nothing(void *ctx) { return 0; }
"""


@pytest.fixture(scope="module")
def bpf():
    from bcc import BPF

    b = BPF(text=PROGRAM)
    yield b
    b.cleanup()


def reader(bpf, name: str) -> MapReader:
    table = bpf[name.encode()]
    layout = layout_of(name, table)
    assert layout is not None
    return MapReader(table.map_fd, layout)


def both_ways(r: MapReader, per_cpu: bool = False) -> dict:
    batched = r.read(per_cpu)
    r.batch_ops = False
    walked = r.read(per_cpu)
    r.batch_ops = True
    assert walked == batched
    return batched


def test_a_hash_with_more_entries_than_the_first_room(bpf):
    table = bpf[b"plain"]
    for k in range(1, 1201):
        table[table.Key(k)] = table.Leaf(k * 3)
    r = reader(bpf, "plain")
    assert r.room == maps._FIRST_ROOM < 1200
    got = both_ways(r)
    assert got == {k: k * 3 for k in range(1, 1201)}
    assert r.count() == 1200 and 1200 <= r.room <= 5000
    r.delete([5, 7, 99999])  # one that is not there: no error
    assert 5 not in r.read() and 7 not in r.read() and r.count() == 1198


def test_per_cpu_struct_keys_and_values(bpf):
    table = bpf[b"per_cpu"]
    ncpu = len(table.Leaf())
    for port in range(1, 301):
        key = table.Key(netns=7, port=port, proto=6)
        per = table.Leaf()
        for cpu in range(ncpu):
            per[cpu] = table.sLeaf(packets=port + cpu, bytes=0)
        table[key] = per
    r = reader(bpf, "per_cpu")
    assert r.layout.key_fields == ("netns", "port", "proto")
    assert r.layout.leaf_fields == ("packets", "bytes")
    summed = both_ways(r)
    # member 0 (packets) summed over CPUs; member 1 (bytes) 0, reported since the key exists
    assert summed[(7, 80, 6, 0)] == sum(80 + c for c in range(ncpu))
    assert summed[(7, 80, 6, 1)] == 0
    split = both_ways(r, per_cpu=True)
    assert split[(7, 80, 6, 0, ncpu - 1)] == 80 + ncpu - 1
    # what bcc reads from the same map
    for k, v in table.items():
        assert summed[(k.netns, k.port, k.proto, 0)] == sum(x.packets for x in v)
    r.delete([(7, 80, 6)])
    assert (7, 80, 6, 0) not in r.read()


def test_an_array_reads_its_nonzero_slots(bpf):
    table = bpf[b"slots"]
    for i in (0, 17, 299):
        table[ctypes.c_int(i)] = ctypes.c_ulonglong(i + 1)
    r = reader(bpf, "slots")
    assert both_ways(r) == {0: 1, 17: 18, 299: 300}


def test_per_cpu_numbers_are_summed_or_split_by_cpu(bpf):
    for name, keys in (
        ("cpu_slots", [ctypes.c_int(i) for i in (0, 5, 1023)]),
        ("cpu_pairs", [bpf[b"cpu_pairs"].Key(netns=3, port=p, proto=17) for p in (1, 2, 3)]),
    ):
        table = bpf[name.encode()]
        ncpu = len(table.Leaf())
        expect_sum, expect_split = {}, {}
        for n, key in enumerate(keys):
            per = table.Leaf()
            for cpu in range(ncpu):
                per[cpu] = (n + 1) * 10 + cpu if cpu != 1 else 0
            table[key] = per
            k = (key.value,) if isinstance(key, ctypes.c_int) else (key.netns, key.port, key.proto)
            expect_sum[k[0] if len(k) == 1 else k] = sum(per)
            for cpu in range(ncpu):
                if per[cpu]:
                    expect_split[(*k, cpu)] = per[cpu]
        r = reader(bpf, name)
        assert r.plain
        assert both_ways(r) == expect_sum
        assert both_ways(r, per_cpu=True) == expect_split
        r.plain = False  # the general path (tuples per entry) reads the same
        assert (r.read(), r.read(per_cpu=True)) == (expect_sum, expect_split)


def test_array_members_read_as_their_elements_and_bcc_misreadings_are_refused(bpf):
    from pyprobe.errors import PyprobeError

    table = bpf[b"rows"]
    r = reader(bpf, "rows")
    assert r.layout.leaf_fields == ("n", *(f"cells[{i}]" for i in range(16)))
    per = table.Leaf()
    for cpu in range(len(per)):
        per[cpu].n, per[cpu].cells[3] = 1, 7
    table[table.Key(9)] = per
    got = both_ways(r)
    assert got[(9, 0)] == len(per) and got[(9, 1 + 3)] == 7 * len(per) and got[(9, 1)] == 0
    with pytest.raises(PyprobeError, match="bcc describes its key and value as 4 and 24 bytes"):
        layout_of("grid", bpf[b"grid"])
