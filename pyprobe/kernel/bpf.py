"""The bpf() system call, without bcc: what user space does with a map, a
program or a link once the kernel holds it by file descriptor (reading and
pruning maps, load/maps.py; loading programs, kernel/programs.py; the
program cache, load/cache.py)."""

from __future__ import annotations

import ctypes
import errno
import os
import platform

_SYS_BPF = {"x86_64": 321, "aarch64": 280, "ppc64le": 361, "s390x": 351, "riscv64": 280}
MAP_CREATE, MAP_LOOKUP_ELEM, MAP_UPDATE_ELEM, MAP_DELETE_ELEM, MAP_GET_NEXT_KEY = 0, 1, 2, 3, 4
PROG_LOAD, OBJ_GET_INFO_BY_FD, RAW_TRACEPOINT_OPEN, MAP_LOOKUP_BATCH = 5, 15, 17, 24

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _InfoAttr(ctypes.Structure):
    _fields_ = [  # union bpf_attr, BPF_OBJ_GET_INFO_BY_FD
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


class _MapInfo(ctypes.Structure):
    _fields_ = [  # the head of struct bpf_map_info
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
    ]


def map_info(fd: int) -> _MapInfo:
    """A map's type, sizes, capacity and flags, as the kernel holds them."""
    info = _MapInfo()
    bpf(OBJ_GET_INFO_BY_FD, _InfoAttr(fd, ctypes.sizeof(info), ctypes.addressof(info)))
    return info


def map_sizes(fd: int) -> tuple[int, int]:
    """(key size, value size) of a map, as the kernel holds it."""
    info = map_info(fd)
    return info.key_size, info.value_size


def bpf(cmd: int, attr: ctypes.Structure) -> int:
    """bpf(cmd, attr): the result, or OSError with the errno."""
    number = _SYS_BPF.get(platform.machine())
    if number is None:
        raise OSError(errno.ENOSYS, f"bpf(): unknown system call number on {platform.machine()}")
    rc = _libc.syscall(number, cmd, ctypes.byref(attr), ctypes.sizeof(attr))
    if rc < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(rc)


class _CreateAttr(ctypes.Structure):
    _fields_ = [  # union bpf_attr, BPF_MAP_CREATE, up to map_name
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
    ]


def create_map(
    map_type: int, key_size: int, value_size: int, max_entries: int, flags: int, name: str
) -> int:
    """A new map's fd (BPF_MAP_CREATE)."""
    attr = _CreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        map_name=name.encode()[:15],
    )
    return bpf(MAP_CREATE, attr)
