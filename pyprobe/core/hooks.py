"""Pick a probe's hook before anything is loaded, and say why.

Like libbpf-tools' tracepoint_exists()/fentry_can_attach(): each hook in the
manifest's order of preference is checked against the KernelEnv; the first
usable one wins. Every verdict keeps its reason for `pyprobe doctor`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..kernel.btf import BTFError
from ..kernel.env import KernelEnv
from ..kernel.points import Hook, Point
from .manifest import Manifest


@dataclass(frozen=True)
class Verdict:
    hook: Hook
    usable: bool
    reason: str


@dataclass
class Offsets:
    """-D flags for a manifest's [offsets], and where they came from."""

    source: str  # "btf", "headers" or "none"
    cflags: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # required ones we could not find
    absent: set[str] = field(default_factory=set)  # optional ones we could not find

    @property
    def complete(self) -> bool:
        return self.source != "none" and not self.missing


def resolve_offsets(manifest: Manifest, env: KernelEnv) -> Offsets:
    btf = env.btf()
    if btf is not None:
        out = Offsets("btf")
        for o in manifest.offsets:
            try:
                f = btf.field(o.path)
                if f.bitfield or f.size != o.size:
                    kind = "a bitfield" if f.bitfield else f"{f.size} bytes"
                    raise BTFError(f"{o.path} is {kind}, expected {o.size} bytes")
                out.cflags.append(f"-D{o.macro}={f.offset}")
            except BTFError as e:
                (out.absent.add(o.macro) if o.optional else out.missing.append(f"{o.macro}: {e}"))
        return out
    if env.headers and env.headers_match:
        # The compiler computes them from headers built for this very kernel.
        out = Offsets("headers", ["-DPYPROBE_OFFSETS_FROM_HEADERS"])
        for o in manifest.offsets:
            struct, _, member = o.path.partition(".")
            out.cflags.append(f"-D{o.macro}=__builtin_offsetof(struct {struct}, {member})")
        return out
    return Offsets("none", missing=[o.macro for o in manifest.offsets if not o.optional])


def judge(hook: Hook, env: KernelEnv, offsets: Offsets) -> Verdict:
    def no(reason: str) -> Verdict:
        return Verdict(hook, False, reason)

    if _disabled(hook, env.disabled_hooks):
        return no("disabled by PYPROBE_DISABLE_HOOKS")
    for point in hook.points:
        problem = _point_problem(point.kind or hook.kind, point, env)
        if problem and not point.optional:
            return no(problem)
    if "btf" in hook.needs and env.btf() is None:
        return no("needs BTF (/sys/kernel/btf/vmlinux)")
    if "offsets" in hook.needs and not offsets.complete:
        if offsets.source == "none":
            return no("needs struct offsets: no BTF and no headers matching this kernel")
        return no(f"struct offsets missing: {'; '.join(offsets.missing)}")
    how = {"btf": "offsets from BTF", "headers": "offsets from matching headers"}.get(
        offsets.source, ""
    )
    reason = hook.why + (f"; {how}" if how and "offsets" in hook.needs else "")
    return Verdict(hook, True, reason)


def _disabled(hook: Hook, disabled: frozenset[str]) -> bool:
    """Named by kind or label. tp_btf is a way of loading a raw tracepoint, so
    disabling raw_tracepoint (or raw_tracepoint:X) disables it too."""
    names = {hook.kind, hook.label}
    if hook.kind == "tp_btf":
        names |= {"raw_tracepoint", "raw_tracepoint:" + hook.label.partition(":")[2]}
    return bool(names & disabled)


def usable_points(hook: Hook, env: KernelEnv, stream: bool) -> tuple[Point, ...]:
    """The points to attach: stream helpers only with the stream, optional
    ones only where this kernel has them."""
    points = (
        p
        for p in hook.points
        if (stream or not p.stream_only)
        and not (p.optional and _point_problem(p.kind or hook.kind, p, env))
    )
    return tuple(_with_btf_id(p, hook.kind, env) for p in points)


def _with_btf_id(point: Point, kind: str, env: KernelEnv) -> Point:
    """A tp_btf point with the id the loader attaches it by (the loader may
    run in a child without the parsed BTF)."""
    btf = env.btf()
    if (point.kind or kind) != "tp_btf" or btf is None:
        return point
    return dataclasses.replace(point, btf_id=btf.raw_tp_id(point.target))


def _point_problem(kind: str, point: Point, env: KernelEnv) -> str:
    target = point.target
    if kind in ("raw_tracepoint", "tp_btf"):
        if not env.raw_tracepoint_exists(target):
            return f"no raw tracepoint {target} in this kernel"
        if point.min_args and env.raw_tracepoint_args(target) < point.min_args:
            # Older kernels pass fewer arguments (e.g. kfree_skb before drop reasons).
            return f"raw tracepoint {target} has fewer than {point.min_args} arguments here"
        if kind == "tp_btf" and not env.tp_btf(target):
            return f"this kernel does not load a BTF-typed (tp_btf) program on {target}"
    elif kind == "tracepoint":
        if env.tracefs is None:
            where = env.host.tracefs_candidates[0]
            return f"tracefs not mounted (mount -t tracefs tracefs {where})"
        if not env.tracepoint_exists(target):
            return f"no tracepoint {target} in this kernel"
        missing = [f for f in point.fields if f not in env.tracepoint_fields(target)]
        if missing:
            return f"tracepoint {target} has no field {', '.join(missing)} here"
    elif kind == "kprobe":
        if not env.kprobes:
            return "kprobes not available (CONFIG_KPROBES off or no kprobe PMU)"
        if not env.kernel_symbol(target):
            return f"no kernel function {target} in /proc/kallsyms"
    return ""


@dataclass
class Choice:
    hook: Hook | None
    verdicts: list[Verdict]
    offsets: Offsets

    @property
    def reason(self) -> str:
        if self.hook:
            return next(v.reason for v in self.verdicts if v.hook is self.hook)
        return "; ".join(f"{v.hook.label}: {v.reason}" for v in self.verdicts)


def choose(manifest: Manifest, env: KernelEnv, features: frozenset[str] | None = None) -> Choice:
    """The first usable hook. features: those on; a point of a feature that
    is off does not rule its hook out (None, or none of a hook's points on:
    every point counts)."""
    offsets = resolve_offsets(manifest, env)
    hooks = manifest.hooks
    if features is not None:
        hooks = tuple(_of_features(h, features) for h in hooks)
    verdicts = [judge(h, env, offsets) for h in hooks]
    hook = next((v.hook for v in verdicts if v.usable), None)
    return Choice(hook, verdicts, offsets)


def _of_features(hook: Hook, features: frozenset[str]) -> Hook:
    """The hook with only its points that are always on or of a feature on."""
    points = tuple(p for p in hook.points if not p.feature or p.feature in features)
    return dataclasses.replace(hook, points=points) if points else hook
