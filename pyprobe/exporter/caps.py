"""Label caps: a metric family keeps at most N distinct values per label; the
rest fold into the value "other" (their samples summed), and the distinct
values folded are counted.

Values are sticky: the first N seen keep their own series while they exist,
so a counter never jumps between its own series and "other" (which would
break rate()). A value absent from RELEASE_AFTER collections of its family in
a row (a deleted namespace or device) gives its slot up to a newcomer. No
per-socket or per-port label exists by default.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping

from prometheus_client.core import Metric
from prometheus_client.samples import Sample

from ..errors import PyprobeError

OTHER = "other"
# Labels whose values come from the outside world get tight caps.
DEFAULT_CAPS = {
    "netns": 100,
    "netns_name": 100,
    "device": 200,
    "location": 100,
    "reason": 200,
    "handle": 50,
    # --label cgroup/pod: one value per container or pod on the host
    "cgroup": 200,
    "container": 200,
    "pod": 200,
}
DEFAULT_CAP = 500  # any other label (states, vectors, CPUs are bounded anyway)
RELEASE_AFTER = 5


def parse_caps(items: Iterable[str]) -> dict[str, int]:
    """--label-cap LABEL=N values."""
    caps = {}
    for item in items:
        label, _, n = item.partition("=")
        if not label.strip() or not n.strip().isdigit() or not 0 < int(n) <= 100_000:
            raise PyprobeError(f"bad --label-cap {item!r}: expected LABEL=N, N from 1 to 100000")
        caps[label.strip()] = int(n)
    return caps


class LabelCaps:
    def __init__(
        self,
        caps: Mapping[str, int] | None = None,
        default: int = DEFAULT_CAP,
        without: Iterable[str] = (),
    ):
        self.caps = {**DEFAULT_CAPS, **(caps or {})}
        # labels summed away before the caps (--label pod: cgroup, container)
        self.without = frozenset(without)
        self.default = default
        # (family, label) -> value -> the family's collection it was last in
        self._seen: dict[tuple[str, str], dict[str, int]] = {}
        self._generation: dict[str, int] = {}
        self._folded: dict[tuple[str, str], set[str]] = {}
        self._lock = threading.Lock()

    def cap(self, label: str) -> int:
        return self.caps.get(label, self.default)

    def _keep(self, family: str, label: str, value: str) -> bool:
        seen = self._seen.setdefault((family, label), {})
        now = self._generation[family]
        if value in seen:
            seen[value] = now
            return True
        if len(seen) >= self.cap(label):
            gone = next((v for v, at in seen.items() if now - at >= RELEASE_AFTER), None)
            if gone is None:
                self._folded.setdefault((family, label), set()).add(value)
                return False
            del seen[gone]
        seen[value] = now
        return True

    def apply(self, family: Metric) -> Metric:
        if self.without:
            family = self._sum_without(family)
        with self._lock:
            self._generation[family.name] = self._generation.get(family.name, 0) + 1
            kept: dict[tuple[str, str], bool] = {}  # each (label, value) decided once
            for s in family.samples:
                for k, v in s.labels.items():
                    if k != "le" and (k, v) not in kept:
                        kept[k, v] = self._keep(family.name, k, v)
        if all(kept.values()):
            return family  # the usual case: nothing folds, the samples stay as they are
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for s in family.samples:
            labels = {k: v if kept.get((k, v), True) else OTHER for k, v in s.labels.items()}
            key = (s.name, tuple(sorted(labels.items())))
            merged[key] = merged.get(key, 0.0) + s.value
        family.samples = [
            Sample(name, dict(labels), value) for (name, labels), value in merged.items()
        ]
        return family

    def _sum_without(self, family: Metric) -> Metric:
        """The family with the labels in `without` left out, the samples
        that then have equal labels summed (a pod's containers)."""
        if not any(k in self.without for s in family.samples for k in s.labels):
            return family
        merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for s in family.samples:
            labels = tuple((k, v) for k, v in s.labels.items() if k not in self.without)
            merged[s.name, labels] = merged.get((s.name, labels), 0.0) + s.value
        family.samples = [
            Sample(name, dict(labels), value) for (name, labels), value in merged.items()
        ]
        return family

    def folded(self) -> Iterable[tuple[str, str, int]]:
        """(family, label, distinct values folded into "other")."""
        with self._lock:
            return [(f, lb, len(v)) for (f, lb), v in sorted(self._folded.items())]
