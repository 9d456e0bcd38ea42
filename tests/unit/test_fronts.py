"""Front slots (pyprobe_bpf.h): what the hash and the front array hold, read
back as one map; their sizes from the manifest or $PYPROBE_MAP_ENTRIES."""

from __future__ import annotations

import pytest

from pyprobe.core import hash_fronts as fronts
from pyprobe.core.sizes import bpf_atomics, map_entries
from pyprobe.errors import PyprobeError
from tests.support import registry


def test_held_keys_read_back_by_member():
    # NAME_fkeys holds the hash's key struct: (slot, member) -> value; free slots are zeros
    held = {(3, 0): 4026531833, (3, 1): 7, (5, 0): 0, (5, 1): 0, (6, 1): 2, (6, 0): 9}
    assert fronts.held_keys(held) == {3: (4026531833, 7), 6: (9, 2)}


def test_struct_values_add_to_the_hash_member_by_member_and_cpu_by_cpu():
    slots = {3: (10, 1), 9: (20, 2)}
    # (slot, member, cpu) -> value; the hash has (netns, ifindex, member[, cpu])
    front = {(3, 0, 0): 5, (3, 1, 0): 50, (3, 0, 1): 2, (3, 1, 1): 20, (9, 0, 1): 7, (9, 1, 1): 0}
    hash_summed = {(10, 1, 0): 1, (10, 1, 1): 10, (30, 3, 0): 4, (30, 3, 1): 0}
    assert fronts.merge(hash_summed, slots, front, per_cpu=False) == {
        (10, 1, 0): 1 + 5 + 2,
        (10, 1, 1): 10 + 50 + 20,
        (20, 2, 0): 7,
        (20, 2, 1): 0,
        (30, 3, 0): 4,
        (30, 3, 1): 0,
    }
    hash_per_cpu = {(10, 1, 0, 1): 1}
    assert fronts.merge(hash_per_cpu, slots, front, per_cpu=True) == {
        (10, 1, 0, 0): 5,
        (10, 1, 1, 0): 50,
        (10, 1, 0, 1): 1 + 2,
        (10, 1, 1, 1): 20,
        (20, 2, 0, 1): 7,
        (20, 2, 1, 1): 0,
    }


def test_plain_values_and_a_slot_freed_while_read():
    front = {(0, 0): 3, (0, 1): 4, (1, 0): 9}  # (slot, cpu); slot 1 was let go
    assert fronts.merge({}, {0: (5, 6)}, front, per_cpu=False) == {(5, 6): 7}
    assert fronts.merge({}, {0: (5, 6)}, front, per_cpu=True) == {(5, 6, 0): 3, (5, 6, 1): 4}
    counts = {(1, 1): 2}
    assert fronts.merge(counts, {0: (5, 6)}, {}, per_cpu=False) is counts


def test_front_sizes_from_the_manifest_and_the_environment():
    netdev = registry.manifests["netdev"]
    assert map_entries(netdev, "")["devices_front"] == 64
    assert map_entries(netdev, "netdev.devices_front=1")["devices_front"] == 1
    assert map_entries(netdev, "netdev.devices_front=0")["devices_front"] == 0
    for bad in ("netdev.devices_front=3", "netdev.devices_front=8192", "netdev.devices_front=x"):
        with pytest.raises(PyprobeError, match="a front: 0 or a power of two up to 4096"):
            map_entries(netdev, bad)


@pytest.mark.parametrize(
    ("release", "atomics"),
    [
        ("6.18.44-fc-v1045", True),
        ("5.12.0", True),
        ("5.11.22-arch1", False),
        ("4.19.0", False),
        ("x", False),
    ],
)
def test_compare_and_swap_from_5_12(release, atomics):
    assert bpf_atomics(release) is atomics
