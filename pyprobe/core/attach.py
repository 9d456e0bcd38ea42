"""Attaching several probes at once: one loader for all of them (the
exporter's start-up, `top`, `conn`, `compile`), each adopted as it is ready."""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Generator, Mapping

from ..errors import PyprobeError
from ..load.program import BatchLoader, LoadRequest
from .probe import Probe


def attach_each(
    probes: Mapping[str, Probe], loader: BatchLoader, streams: Collection[str] = ()
) -> Generator[tuple[str, PyprobeError | None], None, None]:
    """Load every probe's program in one load_each (kept ones from
    the program cache, the rest compiled at once) and adopt each as it is
    ready: (name, None) once a probe is attached, (name, error) for one that
    cannot be. Those named in `streams` are attached streaming. The caller
    closes the loader."""
    requests: dict[str, LoadRequest] = {}
    for name, probe in probes.items():
        if not probe.needs_program(stream=name in streams):
            probe.adopt(None, stream=name in streams)  # the kernel's counters alone
            yield name, None
            continue
        try:
            requests[name] = probe.load_request(stream=name in streams)
        except PyprobeError as e:
            yield name, e
    for _ in range(2):  # a second round for those whose tp_btf the verifier refused
        names = list(requests)
        again: dict[str, LoadRequest] = {}
        # closed with this generator: a caller that stops early stops the compiling
        with contextlib.closing(loader.load_each(list(requests.values()))) as results:
            for i, result in results:
                name = names[i]
                if isinstance(result, PyprobeError):
                    if probes[name].refused_by_verifier(result):
                        try:
                            again[name] = probes[name].load_request(stream=name in streams)
                            continue
                        except PyprobeError as e:
                            result = e
                    yield name, result
                else:
                    probes[name].adopt(result, stream=name in streams)
                    yield name, None
        if not again:
            return
        requests = again


def attach_together(
    probes: Mapping[str, Probe], loader: BatchLoader, streams: Collection[str] = ()
) -> dict[str, PyprobeError]:
    """attach_each, all of it: what kept a probe from attaching, by name."""
    return {name: e for name, e in attach_each(probes, loader, streams) if e is not None}
