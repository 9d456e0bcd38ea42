"""Compiled programs kept on disk: a daemon's restart loads them without clang.

The exporter's start-up is mostly compiling: bcc runs clang over the kernel
headers for every program (~0.3 s each however small; seven programs on two
CPUs, ~2.5 s of ~3). ebpf_exporter and libbpf-tools ship compiled objects;
pyprobe compiles for the running kernel (offsets from BTF, map sizes from the
manifest), so it keeps what it compiled, keyed by everything that went in:
the instructions bcc produced, which of them name a map, and each map's shape.
A hit creates the maps, writes their fds into the instructions, and loads and
attaches the programs with bpf() alone. The kernel verifies them as it would
a fresh compile; any failure drops the entry and the program is compiled.

Only raw tracepoint hooks (tp_btf and raw_tracepoint points) are kept:
classic tracepoints and kprobes attach through perf events, left to bcc.
Streams are kept like the rest: their ring buffer is one more map, created
anew on a hit, and its fd goes to the process that reads it (ringbuf.py).

The entries are code the kernel will run as root: the directory must be
owned by us and writable by no one else, and so must each entry, or the
cache is not used at all.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import PyprobeError
from ..kernel import programs
from ..kernel.bpf import create_map, map_info
from ..kernel.host import host
from ..kernel.points import Hook
from ..logs import kv
from .maps import MapLayout
from .program import Exported

log = logging.getLogger("pyprobe")

DEFAULT_DIR = Path("/var/cache/pyprobe/programs")
FORMAT = 1
# Entries for kernels and pyprobe versions long gone are dropped: one not
# loaded for this long (a hit touches it), or beyond this many, oldest first.
# An entry is a few KB; seven are made per kernel and version.
MAX_AGE_S = 30 * 86400
MAX_ENTRIES = 256
_TMP_AGE_S = 3600  # a save that died left its temporary file behind
_LD_IMM64, _PSEUDO_MAP_FD = 0x18, 1
CACHED_KINDS = ("tp_btf", "raw_tracepoint")
NATIVE = "native"  # compiled formatters (core/native.py), pruned with the entries


PROGRAM_CACHE_ENV = "PYPROBE_PROGRAM_CACHE"


def directory() -> Path | None:
    """Where entries live (PYPROBE_PROGRAM_CACHE: a directory, or "off")."""
    value = os.environ.get(PROGRAM_CACHE_ENV, str(DEFAULT_DIR))
    return None if value in ("", "off") else Path(value)


def key(text: str, hook: Hook, cflags: list[str], maps: list[str]) -> str:
    """What a compiled program depends on: its text (local headers pasted
    in), hook and points (BTF ids included), flags, the maps exported, this
    kernel's build and CPU count (per-CPU value sizes), and pyprobe."""
    return _digest(text, dataclasses.asdict(hook), cflags, maps)


def _digest(*parts: Any) -> str:
    uname = os.uname()
    everything = [
        FORMAT,
        __version__,
        *parts,
        uname.release,
        uname.version,
        os.cpu_count(),
        _possible_cpus(),
    ]
    return hashlib.sha256(json.dumps(everything, sort_keys=True, default=str).encode()).hexdigest()


def cacheable(hook: Hook) -> bool:
    return all((p.kind or hook.kind) in CACHED_KINDS for p in hook.points)


def kept(entry_key: str) -> bool:
    """Whether an entry is there (and safe to use); not whether it still
    loads: load() finds that out, and drops it when it does not."""
    where = directory()
    if where is None:
        return False
    try:
        _safe_dir(where, create=False)
        _safe_file(where / f"{entry_key}.json")
    except (OSError, PyprobeError):
        return False
    return True


# -- saving (in the compiler process, with what bcc compiled) -------------------
# A compiled program as the cache needs it: fd -> name of each map the
# instructions refer to, and each function's instructions.
MapNames = dict[int, str]
Instructions = Callable[[str], bytes]


def save(entry_key: str, exported: Exported, maps: MapNames, insns: Instructions) -> None:
    """Keep a loaded program's instructions and maps under entry_key. Silent
    when it cannot: the cache only ever saves time."""
    if not entry_key or directory() is None or not cacheable(exported.hook):
        return
    try:
        spec = _spec(exported, maps, insns)
    except (OSError, ValueError, PyprobeError) as e:
        log.debug("program cache: not saved", extra=kv(error=e))
        return
    if spec is not None:
        _write(entry_key, spec)


def _write(entry_key: str, spec: dict) -> None:
    where = directory()
    if where is None:
        return
    try:
        _safe_dir(where, create=True)
        fd, tmp = tempfile.mkstemp(dir=where, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(spec, f)
        os.replace(tmp, where / f"{entry_key}.json")
        prune(where)
    except (OSError, ValueError, PyprobeError) as e:
        log.debug("program cache: not saved", extra=kv(error=e))


# -- tc classifiers: the lab's impairments (no maps, no hook) ---------------------
def classifier_key(text: str, function: str, cflags: list[str]) -> str:
    return _digest(text, "sched_cls", function, cflags)


def save_classifier(entry_key: str, function: str, insns: bytes) -> None:
    """Keep a compiled classifier's instructions (bcc's dump_func)."""
    spec = {"format": FORMAT, "classifier": function, "insns": base64.b64encode(insns).decode()}
    _write(entry_key, spec)


def load_classifier(entry_key: str, function: str) -> int | None:
    """A kept classifier, loaded: its fd, or None (none kept, or one the
    kernel no longer takes: dropped)."""
    spec = _read(entry_key)
    if spec is None or spec.get("classifier") != function:
        return None
    try:
        fd = programs.load_sched_cls(base64.b64decode(spec["insns"]), function)
    except (OSError, ValueError, KeyError, TypeError, PyprobeError) as e:
        _drop(entry_key, e)
        return None
    _touch(entry_key)
    return fd


def prune(where: Path, now: float | None = None) -> list[str]:
    """Drop entries not used for MAX_AGE_S, then the least recently used
    beyond MAX_ENTRIES, and temporary files a dead save left; the same for
    the compiled formatters in native/ (ndjson.py: one per source version,
    touched when loaded); their names (native/ ones with that prefix)."""
    now = time.time() if now is None else now
    entries, dropped = [], []
    native = where / NATIVE
    for path in [*where.iterdir(), *(native.iterdir() if native.is_dir() else ())]:
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue  # another process pruned it
        if path.name.startswith(".tmp-") or (path.parent == native and path.name[0] == "."):
            if age > _TMP_AGE_S:  # a save's temporary, a build's (ndjson._build)
                dropped.append(path)
        elif path.suffix in (".json", ".so"):
            entries.append((age, path))
    entries.sort()
    for rank, (age, path) in enumerate(entries):
        if age > MAX_AGE_S or rank >= MAX_ENTRIES:
            dropped.append(path)
    for path in dropped:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return sorted(str(path.relative_to(where)) for path in dropped)


def _spec(exported: Exported, by_fd: MapNames, dump: Instructions) -> dict | None:
    maps = [{"name": name, **_map_info(fd)} for fd, name in by_fd.items()]
    kept = []
    for p in exported.hook.points:
        insns = dump(p.function)
        relocs = []
        for i in range(0, len(insns) // 8):
            op, regs, _off, imm = struct.unpack_from("<BBhi", insns, i * 8)
            if op == _LD_IMM64 and regs >> 4 == _PSEUDO_MAP_FD:
                if imm not in by_fd:
                    return None  # a map we cannot name: not kept
                relocs.append([i, by_fd[imm]])
        kept.append(
            {
                "function": p.function,
                "kind": p.kind or exported.hook.kind,
                "target": p.target,
                "btf_id": p.btf_id,
                "deferred": p.deferred,
                "insns": base64.b64encode(insns).decode(),
                "relocs": relocs,
            }
        )
    return {
        "format": FORMAT,
        "maps": maps,
        "layouts": [dataclasses.asdict(layout) for layout in exported.maps],
        "rings": exported.rings,
        "programs": kept,
    }


def _map_info(fd: int) -> dict[str, int]:
    info = map_info(fd)
    return {
        "type": info.type,
        "key_size": info.key_size,
        "value_size": info.value_size,
        "max_entries": info.max_entries,
        "flags": info.map_flags,
    }


# -- loading (in the daemon, no bcc) ------------------------------------------
def load(entry_key: str, hook: Hook) -> tuple[Exported, list[int]] | None:
    """A kept program, created and attached: its description and fds, as
    BccProgram.export gives them — or None (no entry, or one that no longer
    loads: dropped)."""
    if not cacheable(hook):
        return None
    spec = _read(entry_key)
    if spec is None:
        return None
    opened: list[int] = []
    try:
        loaded = _create(spec, hook, opened)
    except (OSError, ValueError, KeyError, TypeError, struct.error, PyprobeError) as e:
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)
        _drop(entry_key, e)
        return None
    _touch(entry_key)
    return loaded


def _read(entry_key: str) -> dict | None:
    """An entry's description, when there is one of this format, safe to use."""
    where = directory()
    if where is None:
        return None
    path = where / f"{entry_key}.json"
    try:
        _safe_dir(where, create=False)
        _safe_file(path)
        spec = json.loads(path.read_text())
        if not isinstance(spec, dict) or spec.get("format") != FORMAT:
            raise ValueError("another format")
    except FileNotFoundError:
        return None
    except (OSError, ValueError, PyprobeError) as e:
        log.debug("program cache: entry not used", extra=kv(entry=path.name, error=e))
        return None
    return spec


def _touch(entry_key: str) -> None:
    where = directory()
    if where is not None:
        with contextlib.suppress(OSError):
            os.utime(where / f"{entry_key}.json")  # used: the last to be pruned


def _drop(entry_key: str, why: Exception) -> None:
    where = directory()
    if where is None:
        return
    log.info("compiled program not reused", extra=kv(entry=f"{entry_key}.json", error=why))
    with contextlib.suppress(OSError):
        (where / f"{entry_key}.json").unlink()


def _create(spec: dict, hook: Hook, opened: list[int]) -> tuple[Exported, list[int]]:
    maps: dict[str, int] = {}
    for m in spec["maps"]:
        maps[m["name"]] = create_map(
            m["type"], m["key_size"], m["value_size"], m["max_entries"], m["flags"], m["name"]
        )
        opened.append(maps[m["name"]])
    loaded: dict[str, int] = {}
    links: list[int] = []
    for p in spec["programs"]:
        fn = p["function"]
        if fn not in loaded:
            insns = bytearray(base64.b64decode(p["insns"]))
            for index, name in p["relocs"]:
                struct.pack_into("<i", insns, index * 8 + 4, maps[name])
            if p["kind"] == "tp_btf":
                loaded[fn] = programs.load_tp_btf(bytes(insns), fn, p["btf_id"])
            else:
                loaded[fn] = programs.load_raw_tracepoint(bytes(insns), fn)
            opened.append(loaded[fn])
        if p.get("deferred"):
            continue  # loaded only: its plug-in attaches it
        target = None if p["kind"] == "tp_btf" else p["target"]
        links.append(programs.attach(loaded[fn], target))
        opened.append(links[-1])
    layouts = [
        MapLayout(
            **{**d, "key_fields": tuple(d["key_fields"]), "leaf_fields": tuple(d["leaf_fields"])}
        )
        for d in spec["layouts"]
    ]
    rings = list(spec.get("rings", []))
    kept = [maps[layout.name] for layout in layouts] + [maps[name] for name in rings]
    # Maps only the programs use (not read here) live on through the programs.
    for fd in maps.values():
        if fd not in kept:
            os.close(fd)
            opened.remove(fd)
    exported = Exported(hook, layouts, list(loaded), len(links), rings)
    return exported, kept + list(loaded.values()) + links


# -- the directory ---------------------------------------------------------------
def _safe_dir(path: Path, create: bool) -> None:
    if create:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _safe(path.stat(), path)


def _safe_file(path: Path) -> None:
    _safe(path.stat(), path)


def _safe(st: os.stat_result, path: Path) -> None:
    if st.st_uid != os.geteuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PyprobeError(f"{path}: not ours alone (owner {st.st_uid}, mode {st.st_mode:o})")


def _possible_cpus() -> str:
    try:
        return host().sys("devices", "system", "cpu", "possible").read_text().strip()
    except OSError:
        return ""
