"""What a probe's program is built with besides its hook: map sizes (the
manifest's, or $PYPROBE_MAP_ENTRIES), the ring buffer's size, and what the
kernel allows (compare-and-swap for fronts, namespace cookies)."""

from __future__ import annotations

import functools
import os
import re

from ..errors import PyprobeError
from ..netns.namespaces import netns_cookie
from .manifest import MAX_FRONT, Manifest, front_size_ok

# Ring buffer size for streams, in pages; like bpftrace's BPFTRACE_PERF_RB_PAGES
# the environment can change the default (a CLI's --buffer-pages wins).
RINGBUF_PAGES_ENV = "PYPROBE_RINGBUF_PAGES"
RINGBUF_PAGES_DEFAULT = 4096  # 16 MiB: ~150k events of burst (1.3 s at 115k/s) before a loss


def ringbuf_pages(value: int | str | None = None) -> int:
    """The ring buffer's size in pages: a power of two the kernel accepts."""
    source = "--buffer-pages"
    if value is None:
        source = RINGBUF_PAGES_ENV
        value = os.environ.get(RINGBUF_PAGES_ENV) or RINGBUF_PAGES_DEFAULT
    text = str(value).strip()
    n = int(text) if text.isdigit() else 0
    if not 0 < n <= 1 << 18 or n & (n - 1):
        raise PyprobeError(
            f"bad {source} {value!r}: a power of two from 1 to 262144 (pages of 4 KiB)"
        )
    return n


MAP_ENTRIES_ENV = "PYPROBE_MAP_ENTRIES"


def map_entries(manifest: Manifest, override: str | None = None) -> dict[str, int]:
    """Each map's capacity, and each front's slots (as NAME_front): the
    manifest's, or PROBE.MAP=N from $PYPROBE_MAP_ENTRIES (comma-separated)
    for hosts that need smaller maps (a front: 0 for none)."""
    sizes = {m.name: m.entries for m in manifest.maps}
    fronts = {f"{m.name}_front": m.front for m in manifest.maps if m.front}
    sizes |= fronts
    text = os.environ.get(MAP_ENTRIES_ENV, "") if override is None else override
    for item in filter(None, (part.strip() for part in text.split(","))):
        target, _, value = item.partition("=")
        probe, _, name = target.partition(".")
        if probe != manifest.name:
            continue
        n = int(value) if value.isdigit() else -1
        good = (n == 0 or front_size_ok(n)) if name in fronts else 0 < n <= 1 << 24
        if name not in sizes or not good:
            raise PyprobeError(
                f"bad {MAP_ENTRIES_ENV} entry {item!r}: expected {manifest.name}.MAP=N, "
                f"MAP one of {', '.join(sizes)}, N from 1 to {1 << 24} "
                f"(a front: 0 or a power of two up to {MAX_FRONT})"
            )
        sizes[name] = n
    return sizes


def bpf_atomics(release: str) -> bool:
    """Whether the kernel's verifier takes compare-and-swap (5.12 and later),
    which a front's slots are claimed with."""
    m = re.match(r"(\d+)\.(\d+)", release)
    return m is not None and (int(m.group(1)), int(m.group(2))) >= (5, 12)


@functools.cache
def netns_cookies() -> bool:
    """Whether user space can read namespace cookies (SO_NETNS_COOKIE)."""
    return netns_cookie() is not None
