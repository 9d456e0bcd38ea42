"""What this kernel and this process can do, detected without loading BPF
(but one question: whether tp_btf programs load, see KernelEnv.tp_btf).

Everything the hook choice and `pyprobe doctor` need: tracefs, tracepoints,
kprobes, BTF, kernel headers (and whether they match), capabilities, bcc.
The kernel's files are read under the host paths (kernel/host.py); the
headers are this process's own /lib/modules (bcc compiles with those), else
the host's under --path.rootfs (kernel/headers.py); its capabilities are its
own /proc/self/status.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from . import programs
from .btf import BTF, BTFError
from .headers import host_build
from .host import HostPaths, host

CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39
# Hook kinds (or KIND:point labels) never to choose, comma-separated: tests
# and VMs force the fallbacks with it (core/hooks.py).
DISABLE_HOOKS_ENV = "PYPROBE_DISABLE_HOOKS"


def _is_dir(path: Path) -> bool:
    """is_dir() that says False where we may not look (tracefs is 0700 for non-root)."""
    try:
        return path.is_dir()
    except OSError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


@dataclass
class KernelEnv:
    """A snapshot of the machine; tests build one by hand to simulate others."""

    release: str
    tracefs: Path | None
    btf_path: Path | None
    headers: Path | None
    headers_release: str | None
    kprobes: bool
    cap_eff: int
    bcc: bool
    disabled_hooks: frozenset[str] = frozenset()
    host: HostPaths = field(default_factory=HostPaths)
    _btf: BTF | None = field(default=None, repr=False)
    _tp_btf: dict[str, bool] = field(default_factory=dict, repr=False)

    @classmethod
    def detect(cls, paths: HostPaths | None = None) -> KernelEnv:
        paths = paths or host()
        release = os.uname().release
        tracefs = next((p for p in paths.tracefs_candidates if _is_dir(p / "events")), None)
        btf = paths.btf
        # bcc reads the headers of its own mount namespace; where it has none,
        # the host's under --path.rootfs (bcc is told: headers_from_host)
        build = Path(f"/lib/modules/{release}/build")
        headers = build if _is_dir(build / "include") else None
        if headers is None and paths.rootfs != Path("/"):
            headers = host_build(paths, release)
        kprobes = paths.sys("bus", "event_source", "devices", "kprobe").exists() or bool(
            tracefs and (tracefs / "kprobe_events").exists()
        )
        # the process's own capabilities, whichever procfs is the host's
        m = re.search(r"^CapEff:\s*([0-9a-f]+)", _read(Path("/proc/self/status")), re.M)
        disabled = os.environ.get(DISABLE_HOOKS_ENV, "")
        return cls(
            release=release,
            tracefs=tracefs,
            btf_path=btf if btf.exists() else None,
            headers=headers,
            headers_release=_headers_release(headers) if headers else None,
            kprobes=kprobes,
            cap_eff=int(m.group(1), 16) if m else 0,
            bcc=importlib.util.find_spec("bcc") is not None,
            disabled_hooks=frozenset(x.strip() for x in disabled.split(",") if x.strip()),
            host=paths,
        )

    # -- derived facts ---------------------------------------------------------
    @property
    def headers_match(self) -> bool:
        return self.headers_release == self.release

    @property
    def headers_from_host(self) -> bool:
        """The headers are the host's under --path.rootfs, not this process's
        /lib/modules: bcc must be given them (BCC_KERNEL_SOURCE)."""
        own = Path(f"/lib/modules/{self.release}/build")
        return self.headers is not None and self.headers != own

    def has_cap(self, cap: int) -> bool:
        return bool(self.cap_eff >> cap & 1)

    @property
    def can_load_bpf(self) -> bool:
        # CAP_SYS_ADMIN covers both on kernels before 5.8.
        tracing = self.has_cap(CAP_BPF) and self.has_cap(CAP_PERFMON)
        return tracing or self.has_cap(CAP_SYS_ADMIN)

    def btf(self) -> BTF | None:
        if self._btf is None and self.btf_path is not None:
            try:
                self._btf = BTF.load(self.btf_path)
            except (OSError, BTFError):
                self.btf_path = None
        return self._btf

    def forget_btf(self) -> None:
        """Let the parsed BTF go (~10 MB): a daemon needs it to start, not to
        serve; btf() would read it again."""
        self._btf = None

    def tracepoint_exists(self, target: str) -> bool:
        category, _, event = target.partition(":")
        return bool(self.tracefs and _is_dir(self.tracefs / "events" / category / event))

    def raw_tracepoint_exists(self, name: str) -> bool:
        btf = self.btf()
        if btf is not None:
            return btf.has_type(f"btf_trace_{name}")
        # Without BTF: every raw tracepoint is also a classic one somewhere.
        try:
            return bool(self.tracefs and any((self.tracefs / "events").glob(f"*/{name}")))
        except OSError:
            return False

    def tracepoint_fields(self, target: str) -> set[str]:
        category, _, event = target.partition(":")
        if self.tracefs is None:
            return set()
        text = _read(self.tracefs / "events" / category / event / "format")
        return set(re.findall(r"field:[^;]*?(\w+)(?:\[\d*\])?;", text))

    def raw_tracepoint_args(self, name: str) -> int:
        """Arguments of a raw tracepoint per BTF; without BTF, trust the caller (99)."""
        btf = self.btf()
        return btf.raw_tp_args(name) if btf is not None else 99

    def tp_btf(self, name: str) -> bool:
        """Whether the kernel loads a tp_btf program on raw tracepoint `name`
        (asked once per name with a two-instruction program, as libbpf-tools
        ask fentry_can_attach before they choose)."""
        if name not in self._tp_btf:
            btf = self.btf()
            btf_id = btf.raw_tp_id(name) if btf is not None else 0
            self._tp_btf[name] = (
                bool(btf_id) and self.can_load_bpf and programs.tp_btf_loads(btf_id)
            )
        return self._tp_btf[name]

    def kernel_symbol(self, name: str) -> bool:
        return _kallsyms().get(name, False)


@functools.cache
def _kallsyms() -> dict[str, bool]:
    syms: dict[str, bool] = {}
    for line in _read(host().proc("kallsyms")).splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[1] in "tTwW":
            syms[parts[2]] = True
    return syms


def _headers_release(build: Path) -> str | None:
    for rel in ("include/config/kernel.release",):
        text = _read(build / rel).strip()
        if text:
            return text
    m = re.search(r'UTS_RELEASE\s+"([^"]+)"', _read(build / "include/generated/utsrelease.h"))
    return m.group(1) if m else None


def mount_tracefs(paths: HostPaths | None = None) -> Path | None:
    """Mount tracefs where it is missing (under the host's sysfs; needs
    CAP_SYS_ADMIN); None when it cannot be."""
    target = (paths or host()).tracefs_candidates[0]
    if _is_dir(target / "events"):
        return target
    if os.geteuid() != 0 or not _is_dir(target):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(b"tracefs", str(target).encode(), b"tracefs", 0, None)
    return target if rc == 0 and _is_dir(target / "events") else None
