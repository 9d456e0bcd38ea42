"""Loading compiled programs with bpf() alone, and attaching them: BTF-typed
raw tracepoints (libbpf's SEC("tp_btf/...")), plain raw tracepoints and tc
classifiers. bcc compiles; these load what it compiled, or what the program
cache kept (load/cache.py).

bcc 0.26 loads raw tracepoint programs only as BPF_PROG_TYPE_RAW_TRACEPOINT,
whose arguments are bare numbers: every struct member they read costs a
bpf_probe_read_kernel call (~30 ns on this kind of machine). Loaded as
BPF_PROG_TYPE_TRACING against the tracepoint's BTF id, the same kind of
program sees typed pointers, and the verifier lets it load their members
directly: one instruction each, a bad address reading 0 through the exception
table. bcc has no loader for that type, so this module takes the instructions
bcc compiled (BPF.dump_func; the map fds are already in them) and makes the
two bpf() calls itself. Nothing here imports bcc.
"""

from __future__ import annotations

import ctypes
import os

from ..errors import PyprobeError
from .bpf import PROG_LOAD, RAW_TRACEPOINT_OPEN, bpf

_PROG_TYPE_RAW_TRACEPOINT, _PROG_TYPE_TRACING, _TRACE_RAW_TP = 17, 26, 23
_PROG_TYPE_SCHED_CLS = 3
_KINDS = {_PROG_TYPE_TRACING: "tp_btf", _PROG_TYPE_SCHED_CLS: "tc classifier"}
_LOG_SIZE = 1 << 20
# r0 = 0; exit: what tp_btf_loads() loads to ask whether this kernel takes the type.
_RETURN_0 = bytes.fromhex("b7000000000000009500000000000000")


class _LoadAttr(ctypes.Structure):
    _fields_ = [  # union bpf_attr, BPF_PROG_LOAD, up to attach_prog_fd
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32),
        ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("attach_prog_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
    ]


class _OpenAttr(ctypes.Structure):
    _fields_ = [  # union bpf_attr, BPF_RAW_TRACEPOINT_OPEN
        ("name", ctypes.c_uint64),  # 0: the program's attach_btf_id names the tracepoint
        ("prog_fd", ctypes.c_uint32),
        ("_pad", ctypes.c_uint32),
        ("cookie", ctypes.c_uint64),
    ]


def load_tp_btf(insns: bytes, name: str, btf_id: int, log: bool = True) -> int:
    """Load instructions as a tp_btf program for the tracepoint whose
    btf_trace_<name> typedef has this id: its fd, or PyprobeError with the
    verifier's last word."""
    return _load(insns, name, _PROG_TYPE_TRACING, _TRACE_RAW_TP, btf_id, log)


def load_raw_tracepoint(insns: bytes, name: str) -> int:
    """Load instructions as a plain raw tracepoint program (what bcc makes of
    them; the program cache loads kept ones this way, load/cache.py)."""
    return _load(insns, name, _PROG_TYPE_RAW_TRACEPOINT, 0, 0, True)


def load_sched_cls(insns: bytes, name: str) -> int:
    """Load instructions as a tc classifier (the lab's impairments, kept by
    the program cache: load/cache.py)."""
    return _load(insns, name, _PROG_TYPE_SCHED_CLS, 0, 0, True)


def _load(insns: bytes, name: str, prog_type: int, attach_type: int, btf_id: int, log: bool) -> int:
    kind = _KINDS.get(prog_type, "raw tracepoint")
    code = ctypes.create_string_buffer(insns, len(insns))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = _LoadAttr(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(license_),
        prog_name=name.encode()[:15],
        expected_attach_type=attach_type,
        attach_btf_id=btf_id,
    )
    try:
        return bpf(PROG_LOAD, attr)
    except OSError as e:
        if not log:
            raise PyprobeError(f"{name}: cannot load as {kind}: {e.strerror}") from None
        # Again with the verifier's log: only on failure, it costs a copy of it.
        buf = ctypes.create_string_buffer(_LOG_SIZE)
        attr.log_level, attr.log_size, attr.log_buf = 1, _LOG_SIZE, ctypes.addressof(buf)
        try:
            return bpf(PROG_LOAD, attr)  # unlikely: it failed a moment ago
        except OSError:
            pass
        lines = [ln for ln in buf.value.decode(errors="replace").splitlines() if ln.strip()]
        why = " / ".join(lines[-2:]) if lines else e.strerror
        raise PyprobeError(f"{name}: cannot load as {kind}: {why}") from None


def attach(prog_fd: int, target: str | None = None) -> int:
    """Attach a loaded program: the link's fd (closing it detaches). A tp_btf
    program names its tracepoint by BTF id; a raw tracepoint one by target."""
    name = ctypes.create_string_buffer(target.encode()) if target else None
    address = ctypes.addressof(name) if name is not None else 0
    return bpf(RAW_TRACEPOINT_OPEN, _OpenAttr(address, prog_fd, 0, 0))


def tp_btf_loads(btf_id: int) -> bool:
    """Whether this kernel loads a tp_btf program for that tracepoint (5.5+,
    and no LSM or lockdown saying no). The program is closed at once."""
    try:
        fd = load_tp_btf(_RETURN_0, "pyprobe_probe", btf_id, log=False)
    except PyprobeError:
        return False
    os.close(fd)
    return True
