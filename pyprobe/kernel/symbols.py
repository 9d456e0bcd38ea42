"""Kernel text addresses -> function names, from /proc/kallsyms."""

from __future__ import annotations

import array
import bisect
import functools
import itertools
import re
from pathlib import Path

from .host import host

_TEXT_SYMBOL = re.compile(rb"^([0-9a-f]+) [tTwW] (\S+)", re.M)


class Symbols:
    """Kernel addresses -> function names, from /proc/kallsyms (root sees
    addresses: CAP_SYSLOG; the host's procfs unless another path is given)."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            text = (path or host().proc("kallsyms")).read_bytes()
        except OSError:
            text = b""
        # One regex pass over the file, not a split per line (~120k lines:
        # 0.35 -> 0.2 s of the exporter's start-up).
        addrs = sorted(
            (int(addr, 16), name) for addr, name in _TEXT_SYMBOL.findall(text) if addr.strip(b"0")
        )
        # Packed: ~150k symbols as a list of ints and str took 13 MB of a
        # daemon's memory for life; as arrays and one blob, 3 MB.
        self._addrs = array.array("Q", (a for a, _ in addrs))
        self._ends = array.array("I", itertools.accumulate(len(n) for _, n in addrs))
        self._blob = b"".join(n for _, n in addrs)

    def _name_at(self, i: int) -> str:
        start = self._ends[i - 1] if i else 0
        return self._blob[start : self._ends[i]].decode(errors="replace")

    def name(self, addr: int) -> str:
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or not addr:
            return f"0x{addr:x}"
        return f"{self._name_at(i)}+0x{addr - self._addrs[i]:x}"

    def function(self, addr: int) -> str:
        return self.name(addr).partition("+")[0]


@functools.cache
def kernel_symbols() -> Symbols:
    """/proc/kallsyms, read once per process (~0.1 s; kernel text does not move)."""
    return Symbols()
