"""Where a program attaches: a hook (how: tp_btf, raw tracepoint, classic
tracepoint, kprobe) and its points (which tracepoint or function, and the
program's function on it). Manifests declare them (core/manifest.py);
loaders attach them (load/)."""

from __future__ import annotations

from dataclasses import dataclass

# tp_btf: a raw tracepoint whose program sees BTF-typed arguments (kernel/programs.py)
HOOK_KINDS = ("tp_btf", "raw_tracepoint", "tracepoint", "kprobe")


@dataclass(frozen=True)
class Point:
    """One attach point of a hook: a tracepoint/kprobe and the function on it."""

    target: str
    function: str
    stream_only: bool = False  # attached only when the event stream is on
    min_args: int = 0  # raw tracepoints: arguments the program reads (checked in BTF)
    fields: tuple[str, ...] = ()  # tracepoints: format fields the program reads
    kind: str = ""  # when it differs from its hook's (e.g. a raw tracepoint helper)
    optional: bool = False  # skipped where this kernel lacks it, instead of ruling out the hook
    btf_id: int = 0  # tp_btf: the tracepoint's btf_trace_* type id, filled in before load
    feature: str = ""  # attached only with this feature of its probe on ("": always)
    # loaded, not attached: its probe's plug-in attaches it when it needs it
    # (trace: the hooks that only follow a packet, while one is followed)
    deferred: bool = False


@dataclass(frozen=True)
class Hook:
    kind: str
    points: tuple[Point, ...]
    cflags: tuple[str, ...]
    needs: tuple[str, ...]
    why: str

    @property
    def target(self) -> str:
        return self.points[0].target

    @property
    def function(self) -> str:
        return self.points[0].function

    @property
    def label(self) -> str:
        """kind:target[+target...]; helpers attached only for the stream left out."""
        main = [p.target for p in self.points if not p.stream_only]
        return f"{self.kind}:" + "+".join(main or [self.points[0].target])
