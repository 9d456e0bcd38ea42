"""A hash map's front slots, added back into its entries (see pyprobe_bpf.h).

The hottest counters (netdev: every packet; napi: every poll) count in a
direct-mapped per-CPU array when their key holds a slot there, and in the
per-CPU hash otherwise. Which key holds a slot is in a shared keys array of
the hash's key type (a struct of 8 bytes). Read back, the two look like one
map: key -> value in the shape read_counts gives.
"""

from __future__ import annotations

from ..load.maps import Key


def held_keys(held: dict[Key, int]) -> dict[int, tuple[int, ...]]:
    """slot -> key, of the slots taken: read_counts of NAME_fkeys, whose
    values are the hash's key struct, (slot, member) -> value."""
    members: dict[int, list[int]] = {}
    for (slot, *_member), value in sorted(held.items()):  # type: ignore[misc]  # tuple keys
        members.setdefault(slot, []).append(value)
    return {slot: tuple(key) for slot, key in members.items() if any(key)}


def merge(
    counts: dict[Key, int], slots: dict[int, tuple[int, ...]], front: dict[Key, int], per_cpu: bool
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
