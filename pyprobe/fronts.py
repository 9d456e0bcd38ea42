"""A hash map's front slots, added back into its entries (see pyprobe_bpf.h).

The hottest counters (netdev: every packet; napi: every poll) count in a
direct-mapped per-CPU array when their key holds a slot there, and in the
per-CPU hash otherwise. The array's slots take their keys from a shared keys
array, as 8 bytes: the hash's key (two u32 members, in order). Read back,
the two look like one map: key -> value in the shape read_counts gives.
"""

from __future__ import annotations

import struct

from .bpfmaps import Key

_AS_U64 = struct.Struct("=Q")
_AS_KEY = struct.Struct("=II")  # the fronted maps' keys: (netns, ifindex)


def key_of(held: int) -> tuple[int, int]:
    """The hash key a slot holds, from the u64 the program stored."""
    return _AS_KEY.unpack(_AS_U64.pack(held))


def held_keys(held: dict[Key, int]) -> dict[int, tuple[int, int]]:
    """slot -> key, of the slots taken (read_counts of NAME_fkeys)."""
    return {slot: key_of(value) for slot, value in held.items() if value and isinstance(slot, int)}


def merge(
    counts: dict[Key, int], slots: dict[int, tuple[int, int]], front: dict[Key, int], per_cpu: bool
) -> dict[Key, int]:
    """The hash's counts plus the front's.

    front is read_counts(NAME_front, per_cpu=True): (slot, [member,] cpu) ->
    value; each becomes (*key, [member,] [cpu]) and is added to what the hash
    has under it (a key can be in both: counted in the hash before it took a
    slot, or on a CPU that raced it)."""
    if not front:
        return counts
    out = dict(counts)
    for parts, value in front.items():
        slot, *rest = parts if isinstance(parts, tuple) else (parts,)
        key = slots.get(slot)
        if key is None:
            continue  # freed while it was read: its device is gone
        target = (*key, *(rest if per_cpu else rest[:-1]))
        out[target] = out.get(target, 0) + value
    return out
