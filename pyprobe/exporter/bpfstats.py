"""BPF run-time statistics for our own programs, without bpftool.

BPF_ENABLE_STATS turns kernel.bpf_stats_enabled on for as long as we hold
the returned fd (the kernel counts holders), so nothing is left switched on
after the daemon exits. BPF_OBJ_GET_INFO_BY_FD then reads run_time_ns and
run_cnt of each program fd bcc gave us. Offsets in bpf_prog_info are uapi
(stable); they are the kernel's own, from BTF when there is one.
"""

from __future__ import annotations

import ctypes
import os
import struct

from ..kernel.host import host

SYS_BPF = 321  # x86_64
BPF_OBJ_GET_INFO_BY_FD = 15
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0
# struct bpf_prog_info: offsets of run_time_ns and run_cnt (uapi, since 5.1)
RUN_TIME_NS, RUN_CNT = 192, 200
INFO_SIZE = 256

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array) -> int:
    rc = _libc.syscall(SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return rc


def enable_stats() -> int:
    """An fd that keeps run-time stats on until closed."""
    attr = (ctypes.c_uint8 * 16)()
    struct.pack_into("<I", attr, 0, BPF_STATS_RUN_TIME)
    return _bpf(BPF_ENABLE_STATS, attr)


def stats_enabled() -> bool:
    try:
        with open(host().proc("sys", "kernel", "bpf_stats_enabled")) as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def prog_run_stats(fd: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a program fd."""
    info = (ctypes.c_uint8 * INFO_SIZE)()
    attr = (ctypes.c_uint8 * 16)()
    struct.pack_into("<IIQ", attr, 0, fd, INFO_SIZE, ctypes.addressof(info))
    _bpf(BPF_OBJ_GET_INFO_BY_FD, attr)
    run_time_ns, run_cnt = struct.unpack_from("<QQ", info, RUN_TIME_NS)
    return run_time_ns, run_cnt
