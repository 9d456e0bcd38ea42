"""`pyprobe compile`: the exporter's programs, and the streams' (`pyprobe
tcpstates`, `drops --stream`, ...), compiled for this kernel ahead of their
first start (`make setup` runs it, as a package's install step would).

bcc compiles at load time: ~0.3 s of clang per program however small, seven
programs on two CPUs, 1.9-3.1 s before the exporter's first data here. A
restart loads what an earlier start kept (load/cache.py) in ~0.6 s. Compiling
at install time moves the first start onto that path, the way libbpf tools
and ebpf_exporter ship objects compiled before they run — but for this
kernel's offsets, so it is done here, not at build time. A kernel upgrade
makes new keys: the first start after it compiles again (and keeps).

Each missing program is compiled, loaded and attached the way the exporter
would (CompilerLoader: the kernel verifies it here, at install time), kept, and
detached at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import PyprobeError
from ..kernel.env import KernelEnv
from ..load import cache
from ..load.compilers import CompilerLoader, cache_key
from ..load.program import LoadRequest, preflight
from .probe import Probe


@dataclass
class Outcome:
    probe: str
    status: str  # "compiled", "kept" (there already), "not kept" or "failed"
    detail: str = ""


STREAM = " (stream)"  # a program's name: the probe's, and this for its stream


@dataclass(frozen=True)
class Job:
    name: str  # "tcpstates", "tcpstates (stream)", "tcpstates (tcplife)"
    probe: Probe
    stream: bool
    cflags: tuple[str, ...] = ()


def jobs(probes: Sequence[Probe]) -> list[Job]:
    """Each probe's exporter program (none for a probe whose features on
    the kernel counts alone), then its stream as the CLI starts it
    unfiltered, then the other commands built on that stream (`tcplife`)."""
    out = []
    for probe in probes:
        probe_name = probe.name
        if probe.needs_program():
            out.append(Job(probe_name, probe, False))
        if probe.manifest.event is not None:
            out.append(Job(probe_name + STREAM, probe, True))
        for command, cflags in probe.STREAM_VARIANTS.items():
            out.append(Job(f"{probe_name} ({command})", probe, True, cflags))
    return out


def survey(probes: Sequence[Probe]) -> tuple[dict[str, Outcome], dict[str, LoadRequest]]:
    """What the program cache already holds for these probes' programs."""
    return settle(jobs(probes))


def settle(todo: Sequence[Job]) -> tuple[dict[str, Outcome], dict[str, LoadRequest]]:
    """An outcome for each program settled without compiling ("kept", "not
    kept", "failed"), and the requests of those still to compile."""
    outcomes: dict[str, Outcome] = {}
    missing: dict[str, LoadRequest] = {}
    for job in todo:
        try:
            request = job.probe.load_request(stream=job.stream, cflags=job.cflags)
        except PyprobeError as e:
            outcomes[job.name] = Outcome(job.name, "failed", str(e))
            continue
        hook = request.hook
        if not cache.cacheable(hook):
            outcomes[job.name] = Outcome(
                job.name, "not kept", f"{hook.label}: compiled at each start"
            )
        elif cache.kept(cache_key(request)):
            outcomes[job.name] = Outcome(job.name, "kept", hook.label)
        else:
            missing[job.name] = request
    return outcomes, missing


def compile_all(env: KernelEnv, make: Callable[[CompilerLoader], Sequence[Probe]]) -> list[Outcome]:
    """Every probe's programs compiled into the program cache, unless they
    are there already. make(loader): the probes, given the loader to use."""
    if cache.directory() is None:
        raise PyprobeError("the program cache is off (PYPROBE_PROGRAM_CACHE): nothing to keep")
    preflight(env)
    loader = CompilerLoader()
    try:
        todo = jobs(make(loader))
        outcomes, missing = settle(todo)
        start = time.monotonic()
        results = loader.load_many(list(missing.values()))
    finally:
        loader.close()
    took = f"{time.monotonic() - start:.1f} s for {len(missing)}"
    for name, result in zip(missing, results, strict=True):
        if isinstance(result, PyprobeError):
            outcomes[name] = Outcome(name, "failed", str(result))
            continue
        result.close()  # kept on disk (or not: saving is silent); detached here
        label = missing[name].hook.label
        if cache.kept(cache_key(missing[name])):
            outcomes[name] = Outcome(name, "compiled", f"{label} ({took})")
        else:
            outcomes[name] = Outcome(name, "not kept", f"{label}: loaded, but could not be saved")
    # in the probes' order, each one's streams after it
    return [outcomes[job.name] for job in todo]
