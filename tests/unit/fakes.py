"""A fake loader with the Program interface: maps are dicts, the ring buffer a list."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pyprobe.kernel.btf import BTFError, Field
from pyprobe.kernel.env import KernelEnv
from pyprobe.kernel.points import Hook
from pyprobe.load.program import LoadRequest


class FakeProgram:
    def __init__(self, hook: Hook, cflags: list[str], maps: dict, events: list[bytes]):
        self.hook, self.cflags, self.maps, self.queued = hook, cflags, maps, events
        self.callbacks: dict = {}
        self.closed = False

    def read_counts(self, map_name: str, per_cpu: bool = False) -> dict:
        """Maps are {key: value}, or {key: [value per CPU]} for per-CPU ones."""
        out: dict = {}
        for k, v in self.maps.get(map_name, {}).items():
            if isinstance(v, list) and per_cpu:
                base = k if isinstance(k, tuple) else (k,)
                out.update({(*base, cpu): n for cpu, n in enumerate(v) if n})
            elif sum(v) if isinstance(v, list) else v:
                out[k] = sum(v) if isinstance(v, list) else v
        return out

    def key_fields(self, map_name: str) -> tuple[str, ...]:
        return tuple(self.maps.get(f"{map_name}.fields", ()))

    def leaf_fields(self, map_name: str) -> tuple[str, ...]:
        return tuple(self.maps.get(f"{map_name}.leaf", ()))

    def open_ringbuf(self, map_name: str, callback) -> None:
        self.callbacks[map_name] = callback

    def poll(self, timeout_ms: int) -> None:
        for cb in self.callbacks.values():
            while self.queued:
                cb(self.queued.pop(0))

    def close(self) -> None:
        self.closed = True


class FakeLoader:
    def __init__(self, maps: dict | None = None, events: list[bytes] | None = None):
        self.maps = maps or {}
        self.events = events or []
        self.programs: list[FakeProgram] = []
        self.requests: list[LoadRequest] = []

    def check(self, env) -> None:
        pass  # no privilege needed to load nothing

    def load(self, request: LoadRequest) -> FakeProgram:
        prog = FakeProgram(request.hook, list(request.cflags), self.maps, self.events)
        self.requests.append(request)
        self.programs.append(prog)
        return prog

    # as CompilerLoader, which the CLI's commands use
    def load_many(self, requests: list) -> list[FakeProgram]:
        return [self.load(r) for r in requests]

    def load_each(self, requests: list) -> Iterator[tuple[int, FakeProgram]]:
        return enumerate(self.load_many(requests))

    def close(self) -> None:
        pass


class FakeBTF:
    """Field offsets by dotted path; raises like the real one for the rest."""

    def __init__(
        self,
        fields: dict[str, tuple[int, int]],
        types: set[str] = frozenset(),
        args: dict[str, int] | None = None,
        enums: dict[str, dict[int, str]] | None = None,
    ):
        self.fields, self.types = fields, set(types)
        self.args, self.enums = args or {}, enums or {}

    def enum(self, name: str) -> dict[int, str]:
        if name not in self.enums:
            raise BTFError(f"enum {name} not in BTF")
        return self.enums[name]

    def field(self, path: str) -> Field:
        if path not in self.fields:
            raise BTFError(f"{path}: no member")
        off, size = self.fields[path]
        return Field(off, size, False)

    def has_type(self, name: str) -> bool:
        return name in self.types

    def raw_tp_id(self, name: str) -> int:
        return (
            1000 + sorted(self.types).index(f"btf_trace_{name}")
            if self.has_type(f"btf_trace_{name}")
            else 0
        )

    def raw_tp_args(self, name: str) -> int:
        if f"btf_trace_{name}" not in self.types:
            return 0
        return self.args.get(name, 99)


TCPSTATES_FIELDS = {
    "sock_common.skc_family": (16, 2),
    "sock_common.skc_state": (18, 1),
    "inet_sock.inet_sport": (782, 2),
    "sock_common.skc_dport": (12, 2),
    "sock_common.skc_daddr": (0, 4),
    "sock_common.skc_rcv_saddr": (4, 4),
    "sock_common.skc_v6_daddr": (56, 16),
    "sock_common.skc_v6_rcv_saddr": (72, 16),
    "sock.sk_protocol": (532, 2),
    "sock_common.skc_net.net": (48, 8),
    "net.ns.inum": (176, 4),
    "tcp_sock.bytes_received": (1400, 8),
    "tcp_sock.bytes_acked": (1528, 8),
    "sock.sk_cgrp_data.cgroup": (704, 8),
    "cgroup.kn": (264, 8),
    "cgroup.level": (192, 4),
    "cgroup.ancestors": (2048, 0),
    "kernfs_node.id": (88, 8),
}


@dataclass
class FakeEnv(KernelEnv):
    tracepoints: frozenset[str] = frozenset({"sock:inet_sock_set_state"})
    symbols: frozenset[str] = frozenset({"tcp_set_state"})
    fake_btf: FakeBTF | None = None
    fields: dict | None = None  # tracepoint -> its format fields
    tp_btf_loads: bool = True  # whether a tp_btf program would load (KernelEnv.tp_btf)

    def btf(self):
        return self.fake_btf

    def tracepoint_exists(self, target: str) -> bool:
        return self.tracefs is not None and target in self.tracepoints

    def raw_tracepoint_exists(self, name: str) -> bool:
        return self.fake_btf is not None and self.fake_btf.has_type(f"btf_trace_{name}")

    def tp_btf(self, name: str) -> bool:
        return self.tp_btf_loads and self.raw_tracepoint_exists(name)

    def kernel_symbol(self, name: str) -> bool:
        return name in self.symbols

    def tracepoint_fields(self, target: str) -> set[str]:
        return set((self.fields or {}).get(target, ()))


def fake_env(**over) -> FakeEnv:
    """A machine like CI's: BTF and tracefs, no kprobes, root, bcc, mismatched headers."""
    base = dict(
        fake_btf=FakeBTF(TCPSTATES_FIELDS, {"btf_trace_inet_sock_set_state"}),
        release="6.18.0-test",
        tracefs=Path("/nonexistent/tracing"),
        btf_path=None,
        headers=Path("/lib/modules/x/build"),
        headers_release="6.1.0",
        kprobes=False,
        cap_eff=(1 << 41) - 1,
        bcc=True,
    )
    base.update(over)
    return FakeEnv(**base)
