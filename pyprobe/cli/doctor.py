"""`pyprobe doctor`: every fact the hook choice rests on, and what to do about it."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from collections.abc import Callable

from ..core import compile as precompile
from ..core.costs import cost
from ..core.native import NATIVE_ENV
from ..errors import PyprobeError
from ..kernel.container import Confinement, mount_type
from ..kernel.env import KernelEnv
from ..load import cache, ringbuf
from ..load.bcc import bcc_version
from ..load.program import preflight
from ..probes import Registry
from .common import environment_set
from .container import (
    btf_advice,
    capability_lines,
    container_lines,
    headers_advice,
    tracefs_advice,
)

OK, NO, INFO = "ok", "!!", "--"


def compiled_ahead(env: KernelEnv, registry: Registry) -> tuple[str, str, str]:
    """Whether the programs for this kernel (the exporter's and the streams')
    are in the program cache (`pyprobe compile`): a first start then loads
    instead of compiling."""
    where = cache.directory()
    if where is None:
        return INFO, "programs", "program cache off (PYPROBE_PROGRAM_CACHE): every start compiles"
    outcomes, missing = precompile.survey([registry.create(n, env=env) for n in registry.names()])
    kept = sum(o.status == "kept" for o in outcomes.values())
    total = kept + len(missing)  # failures: the probe list below says why
    if kept == total:
        return OK, "programs", f"all {total} programs compiled for this kernel ({where})"
    return (
        INFO,
        "programs",
        f"{kept} of {total} programs compiled for this kernel: `pyprobe compile` "
        "saves a first start ~1-3 s of compiling",
    )


def _native() -> str:
    """Whether a busy stream's -j lines can be made in C (core/native.py)."""
    if os.environ.get(NATIVE_ENV) == "off":
        return f"{NATIVE_ENV}=off"
    if not ringbuf.available():
        return "not x86"
    cc = os.environ.get("CC", "cc")
    return "" if shutil.which(cc) else f"no C compiler ({cc})"


def report(env: KernelEnv, registry: Registry, echo: Callable[[str], None]) -> bool:
    def line(mark: str, what: str, detail: str) -> None:
        echo(f"[{mark}] {what:<14} {detail}")

    echo(f"pyprobe {importlib.metadata.version('pyprobe')} on kernel {env.release}")
    confinement = Confinement.detect(env.host)
    # In a container, what is missing comes with the podman flag and the
    # Kubernetes field that bring it in.
    boxed = confinement.in_container
    if not env.host.is_default:
        line(INFO, "host paths", env.host.describe())
    line(
        OK if env.btf() else NO,
        "BTF",
        str(env.btf_path)
        if env.btf()
        else "missing: raw tracepoints and kprobes need struct offsets (CONFIG_DEBUG_INFO_BTF=y)"
        + (f" — {btf_advice(env)}" if boxed else ""),
    )
    where = env.host.tracefs_candidates[0]
    if env.tracefs:
        line(OK, "tracefs", str(env.tracefs))
    elif any(mount_type(p) == "tracefs" for p in env.host.tracefs_candidates):
        # tracefs is 0700: without privilege it looks absent
        line(NO, "tracefs", "not readable without root (or not mounted): run as root")
    else:
        line(
            NO,
            "tracefs",
            f"not mounted, nor mountable here: mount -t tracefs tracefs {where}"
            + (f" — {tracefs_advice(env)}" if boxed else ""),
        )
    if env.headers is None:
        line(
            NO,
            "headers",
            f"missing: /lib/modules/{env.release}/build: install linux-headers-{env.release} "
            "(in a checkout, `make setup` does)" + (f" — {headers_advice(env)}" if boxed else ""),
        )
    elif env.headers_match:
        line(OK, "headers", f"{env.headers} ({env.headers_release}, matches)")
    elif env.btf():
        line(
            INFO,
            "headers",
            f"{env.headers.resolve()} ({env.headers_release}) does not match "
            f"{env.release}: used only to compile; struct offsets come from BTF",
        )
    else:
        line(
            NO,
            "headers",
            f"{env.headers.resolve()} ({env.headers_release}) does not match "
            f"{env.release} and there is no BTF: probes that read kernel structs cannot "
            f"run (install linux-headers-{env.release}, or use a kernel with BTF)",
        )
    if env.headers_from_host:
        line(
            INFO,
            "headers",
            "the host's, under --path.rootfs: bcc is given them (BCC_KERNEL_SOURCE)",
        )
    line(
        OK if env.kprobes else INFO,
        "kprobes",
        "available"
        if env.kprobes
        else "not available (CONFIG_KPROBES off): kprobe fallbacks cannot be used here",
    )
    for fact in capability_lines(env, confinement):
        line(*fact)
    for fact in container_lines(env, confinement):
        line(*fact)
    line(
        OK if env.bcc else NO,
        "bcc",
        bcc_version()
        if env.bcc
        else "missing: apt-get install python3-bpfcc (venv: --system-site-packages)",
    )
    why_not = _native()
    line(
        INFO if why_not else OK,
        "stream -j",
        f"lines made in Python (~10x the CPU under churn): {why_not}"
        if why_not
        else "lines made in C (built at first use, kept in the program cache)",
    )
    # What the environment changes here (each command's --help says what each does).
    for name, value in environment_set().items():
        line(INFO, "environment", f"{name}={value}")

    global_ok = True
    try:
        preflight(env)
    except PyprobeError as e:
        global_ok = False
        echo(f"\nno probe can load until this is fixed: {e}")

    if global_ok:
        line(*compiled_ahead(env, registry))

    usable = 0
    echo("\nprobes (hooks in order of preference; * = chosen):")
    for name in registry.names():
        probe = registry.create(name, env=env)
        how, _why = probe.runs_here()
        choice = probe.available()
        echo(f"  {name}: {'uses ' + how if how else 'UNAVAILABLE'}")
        for feature in probe.manifest.features:
            state = "on" if feature.name in probe.features else "off"
            price = cost(name, feature.name)
            echo(
                f"    feature {name}.{feature.name} ({state}): {feature.help}"
                + (f"; costs {price}" if price else "")
            )
        for v in choice.verdicts:
            mark = "*" if v.hook is choice.hook else ("+" if v.usable else "-")
            echo(f"    {mark} {v.hook.label:<38} {v.reason}")
        usable += how is not None
    on_demand = [n for n, m in registry.manifests.items() if m.on_demand]
    if on_demand:
        echo("\non demand (loaded by their own command, with what it compiles in):")
        for name in on_demand:
            probe = registry.create(name, env=env)
            how, why = probe.runs_here(stream=True)
            hook = probe.available().hook
            points = f" ({len(hook.points)} points)" if hook is not None else ""
            kind = how.partition(":")[0] if how else ""
            echo(f"  {name}: {'uses ' + kind + points if how else 'UNAVAILABLE: ' + why}")
    echo(
        f"\n{usable} of {len(registry.names())} probes can run here"
        + ("" if global_ok else " once the problem above is fixed")
    )
    return global_ok and usable > 0
