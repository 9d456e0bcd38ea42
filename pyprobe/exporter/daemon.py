"""The exporter daemon's life: validate the config, bind the port, attach the
probes, serving from the first attached one on; SIGHUP re-reads the web
config (a bad one keeps the old); SIGTERM/SIGINT detach everything and exit 0."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from ..core.attach import attach_each
from ..errors import PyprobeError
from ..kernel.env import KernelEnv
from ..kernel.host import host as host_paths
from ..load.bcc import release_compiler_memory
from ..load.program import BatchLoader, preflight
from ..logs import kv
from ..netns.links import read_namespaces
from ..netns.linkstats import keep_namespaces
from ..probes import Registry
from . import bpfstats, privileges, webconfig
from .caps import LabelCaps
from .collectors import ProbeCollector, ProbeState, SelfCollector
from .server import DEFAULT_PATH, Server, parse_address, parse_path

log = logging.getLogger("pyprobe.exporter")


@dataclass
class Options:
    address: str
    web_config: str | None = None
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    strict: bool = False
    bpf_stats: bool = False
    label_caps: dict[str, int] = field(default_factory=dict)
    drop_privileges: str | None = None  # user to become once attached
    telemetry_path: str = DEFAULT_PATH
    labels: Sequence[str] = ()  # --label: cgroup (cgroup, container, pod) or pod alone


LABELS = ("cgroup", "pod")  # --label
POD_WITHOUT = ("cgroup", "container")  # --label pod alone: series per pod, not per container


def select(
    registry: Registry, include: Sequence[str], exclude: Sequence[str]
) -> dict[str, frozenset[str] | None]:
    """--probe/--no-probe: probe -> features beside its defaults (Registry.select)."""
    return registry.select(include, exclude)


def own_registry() -> CollectorRegistry:
    """The registry the daemon serves, with what every Prometheus exporter
    says of itself: process_* (CPU seconds, resident and virtual memory, open
    and maximum file descriptors, start time: its own cost, next to the
    workload's) and, as Go exporters serve go_info and go_gc_*, python_info
    and python_gc_*. Read at scrape time from /proc/self, which stays
    readable after --drop-privileges."""
    registry = CollectorRegistry(auto_describe=False)  # registering reads nothing
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@contextlib.contextmanager
def _signals(stop: threading.Event, reload: threading.Event) -> Iterator[None]:
    def on_stop(signum: int, frame: Any) -> None:
        stop.set()

    def on_hup(signum: int, frame: Any) -> None:
        reload.set()

    previous = {
        s: signal.signal(s, h)
        for s, h in ((signal.SIGTERM, on_stop), (signal.SIGINT, on_stop), (signal.SIGHUP, on_hup))
    }
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(
    opts: Options, env: KernelEnv, registry: Registry, new_loader: Callable[[], BatchLoader]
) -> None:
    # 1. everything that can be wrong with the command line or the config
    config = webconfig.load(opts.web_config)
    host, port = parse_address(opts.address)
    path = parse_path(opts.telemetry_path)
    names = select(registry, opts.include, opts.exclude)
    if opts.labels:
        names = registry.with_labels(names, {"cgroup"})
    if not names:
        raise PyprobeError("no probes left to run (--probe/--no-probe)")
    user = privileges.lookup(opts.drop_privileges) if opts.drop_privileges else None
    # A problem no probe can get past (privileges, bcc, headers) is fatal now,
    # not a daemon serving only its own metrics.
    preflight(env)
    paths = host_paths()
    if not paths.is_default:  # --path.*: checked when given
        log.info(
            "host paths",
            extra=kv(procfs=paths.procfs, sysfs=paths.sysfs, rootfs=paths.rootfs),
        )
    # 2. the port: a port in use fails here, before any program is loaded
    collectors = own_registry()
    reload_state = {"ok": True, "at": time.time()}
    server = Server((host, port), collectors, config, path)
    stop, reload = threading.Event(), threading.Event()
    states: dict[str, ProbeState] = {}
    stats_fd = None
    thread: threading.Thread | None = None
    # bcc, clang and LLVM live in a child for the attach phase only (load/compilers.py)
    loader = new_loader()
    # Serve from the first attached probe on while the rest compile (a start
    # with nothing in the program cache takes ~3 s for all seven), unless a
    # failure must stop the daemon before it serves (--strict), or it is to
    # serve only once it holds no privilege.
    early = not opts.strict and user is None
    serving = False

    def serve() -> None:
        nonlocal thread
        thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        thread.start()
        scheme = "https" if config.tls else "http"
        log.info(
            "listening",
            extra=kv(
                address=f"{scheme}://{host}:{server.server_address[1]}{path}",
                probes=f"{sum(s.attached for s in states.values())}/{len(states)}",
            ),
        )

    try:
        with _signals(stop, reload):
            # 3. the probes
            pods_only = "pod" in opts.labels and "cgroup" not in opts.labels
            caps = LabelCaps(opts.label_caps, without=POD_WITHOUT if pods_only else ())
            probes = {n: registry.create(n, env, loader, f) for n, f in names.items()}
            states.update({name: ProbeState(name, probe) for name, probe in probes.items()})
            self_collector = SelfCollector(states, caps, reload_state)
            if opts.bpf_stats:
                try:
                    stats_fd = bpfstats.enable_stats()
                    self_collector.stats_on = True
                except OSError as e:
                    log.warning("cannot enable BPF run-time stats", extra=kv(error=e.strerror))
            collectors.register(self_collector)
            # Kept programs first, then compiled two at a time (one child per
            # CPU, at most 2); each probe is adopted and served as it comes.
            with contextlib.closing(attach_each(probes, loader)) as attached:
                for name, error in attached:
                    state = states[name]
                    collector = ProbeCollector(state, caps)
                    if error is None:
                        hook = probes[name].hook_label
                        log.info("probe attached", extra=kv(probe=name, hook=hook))
                    else:
                        state.error = str(error)
                        log.warning("probe not attached", extra=kv(probe=name, error=error))
                    # Between scrapes: the probes share name caches and netlink.
                    with server.scrape_lock:
                        # One collection before it is served: symbol tables and
                        # name caches are loaded now, not during a scrape.
                        list(collector.collect())
                        collectors.register(collector)
                        state.loading = False
                    if stop.is_set():
                        return
                    if early and not serving and state.attached:
                        serve()
                        serving = True
            loader.close()
            failed = [state.error for state in states.values() if not state.attached]
            if opts.strict and failed:
                raise PyprobeError(failed[0])
            if stop.is_set():
                return
            if not any(state.attached for state in states.values()):
                reasons = "; ".join(f"{n}: {st.error}" for n, st in states.items())
                raise PyprobeError(f"no probe could attach: {reasons}")
            env.forget_btf()
            release_compiler_memory()
            # What start-up made (imports, manifests, symbol tables: ~40k
            # objects) lives as long as the daemon: out of the collector's
            # sight, a full collection no longer walks it (17-19 ms here,
            # landing in whichever scrape triggered it).
            gc.collect()
            gc.freeze()
            if user is not None:
                read_namespaces()  # names of the namespaces we will no longer enter
                keep_namespaces()  # and a socket in each, for their devices' counters
                privileges.drop(user)
                log.info(
                    "privileges dropped",
                    extra=kv(user=user.name, uid=user.uid, capabilities="none"),
                )
            # 4. serve
            if not serving:
                serve()
            log.info(
                "start-up complete",
                extra=kv(probes=f"{sum(s.attached for s in states.values())}/{len(states)}"),
            )
            while not stop.is_set():
                reload.wait(0.5)
                if reload.is_set():
                    reload.clear()
                    _reload(server, opts.web_config, reload_state)
    finally:
        loader.close()
        if thread is not None:
            server.shutdown()
        server.server_close()
        for state in states.values():
            if state.probe is not None:
                state.probe.detach()
        if stats_fd is not None:
            os.close(stats_fd)
        log.info("stopped: every probe detached")


def _reload(server: Server, path: str | None, state: dict) -> None:
    try:
        server.config = webconfig.load(path)
    except PyprobeError as e:
        state["ok"] = False
        log.error("config reload failed, keeping the old one", extra=kv(error=e))
        return
    state["ok"], state["at"] = True, time.time()
    log.info("config reloaded", extra=kv(file=path or "-"))
