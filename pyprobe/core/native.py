"""A stream's NDJSON in C: records from the ring buffer's mapping to lines,
the bytes json_lines (core/eventcode.py) writes for the same records.

The formatter is generated from the same description as the Python path
(the struct from bpf/pyprobe.h, the outputs from the manifest), for events
whose every decoder has a C form (tcpstates' has); built at first use with
the system's C compiler into the program cache (cache.directory()/native;
with the cache off, for the process alone), keyed by the generated source,
the shared headers and the compiler; loaded with ctypes, no extension
module. No compiler, another architecture than x86 (ringbuf.available), or
PYPROBE_NATIVE=off: there is none and the Python path stays. The C side
hands back to Python what it does not handle (NEW_NETNS: a namespace to
name; NEW_CGROUP: a cgroup to name, its path, container and pod as one
JSON fragment; HAND_BACK: one record).
"""

from __future__ import annotations

import ctypes
import hashlib
import mmap
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..load import cache, ringbuf
from ..paths import bpf_dir
from .eventcode import MONO_TO_WALL_NS, STATES, Output
from .events import Header, Layout
from .text import quoted

RUNTIME = Path(__file__).with_name("native_c") / "ndjson_runtime.h"
NATIVE_ENV = "PYPROBE_NATIVE"
_CAUGHT_UP, _OUT_FULL, _HAND_BACK, _NEW_NETNS, _NEW_CGROUP = 0, 1, 2, 3, 4
_OUT = 1 << 20  # bytes formatted per call: ~2,900 lines
_PROT_READ, _MAP_SHARED = 0x1, 0x01
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]  # fmt: skip
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_LOADED: list[ctypes.CDLL] = []
# decoders the generated C has: the rest stay in Python
C_DECODERS = ("num", "wall_time", "hex", "comm", "flag", "family", "addr", "tcp_state", "ms",
              "netns_name", "cgroup_path", "container", "pod")  # fmt: skip
# A cgroup's three texts, one after the other from one id: written as one
# fragment Python renders once per cgroup (CGROUP_KEYS in that order).
CGROUP_KEYS = ("cgroup_path", "container", "pod")
MAX_CGROUPS = 4096  # named in C's table per consume; the rest go through Python


def supported(outs: Sequence[Output]) -> bool:
    names = [o for o in outs if o.decoder == "netns_name"]
    return (
        all(o.decoder in C_DECODERS and o.when is None for o in outs)
        and all(len(o.args) == 1 for o in names)  # an inode, not an id to look up
        and len(names) <= 1
        and _cgroup_run(outs) is not False
    )


def _cgroup_run(outs: Sequence[Output]) -> int | bool | None:
    """Where the cgroup trio starts (None: no cgroup text at all; False: not
    the three together, in order, of one field, keyed by their names)."""
    at = [i for i, o in enumerate(outs) if o.decoder in CGROUP_KEYS]
    if not at:
        return None
    trio = outs[at[0] : at[0] + 3]
    if (
        len(at) != 3
        or tuple(o.decoder for o in trio) != CGROUP_KEYS
        or tuple(o.key for o in trio) != CGROUP_KEYS
        or len({o.args for o in trio}) != 1
    ):
        return False
    return at[0]


def cgroup_fragment(texts: Sequence[str]) -> str:
    """The JSON a cgroup's three texts make, as json_lines writes them."""
    return ",".join(f'"{k}":{quoted(t)}' for k, t in zip(CGROUP_KEYS, texts, strict=True))


def source(outs: Sequence[Output], layout: Layout, header: Header) -> str:
    """The formatter's C: a function named after the struct."""

    def bit(name: str) -> int:
        return header.constant("F_" + name)

    prep, body, first = [], [], True
    texts: list[str] = []

    def key(name: str) -> str:
        nonlocal first
        text = ("{" if first else ",") + f'\\"{name}\\":'
        first = False
        return text

    def put(text: str) -> None:
        body.append(f'o = put(o, "{text}");')

    cgroup = None
    for o in outs:
        if o.decoder in ("container", "pod"):
            continue  # in cgroup_path's fragment
        if o.decoder == "cgroup_path":
            cgroup = o.args[0]
            put("{" if first else ",")
            first = False
            body.append("memcpy(o, cg_json[cg], cg_len);\n\t\to += cg_len;")
            continue
        a, k = o.args, key(o.key)
        flag = None
        at = {"num": 1, "ms": 1, "family": 1, "addr": 2}.get(o.decoder)
        if at is not None and len(a) > at:
            flag = f"(e->flags & {bit(a[at])})"
        if o.decoder == "num":
            put(k)
            value = f"o = put_u64(o, e->{a[0]});"
            body.append(f'if {flag} {value} else o = put(o, "null");' if flag else value)
        elif o.decoder == "wall_time":
            put(k)
            body.append(f"o = put_fixed(o, e->{a[0]} + mono_to_wall_ns, 9, 1000000000ull);")
        elif o.decoder == "ms":
            put(k)
            value = f"o = put_fixed(o, e->{a[0]}, 6, 1000000ull);"
            body.append(f'if {flag} {value} else o = put(o, "null");' if flag else value)
        elif o.decoder == "hex":
            put(k + '\\"')
            body.append(f"if (e->{a[0]}) o = put_hex(o, e->{a[0]});")
            put('\\"')
        elif o.decoder == "comm":
            texts.append(f"t_{o.key}")
            prep.append(f"ok = ok && remember_comm(&t_{o.key}, e->{a[0]});")
            put(k)
            body.append(f"o = put(o, t_{o.key}.text);")
        elif o.decoder == "flag":
            put(k)
            body.append(f'o = put(o, (e->flags & {bit(a[0])}) ? "true" : "false");')
        elif o.decoder == "family":
            put(k + '\\"')
            text = f'(e->{a[0]} == AF_INET6 ? "IPv6" : e->{a[0]} == AF_INET ? "IPv4" : "")'
            body.append(f'o = put(o, {flag} ? {text} : "");' if flag else f"o = put(o, {text});")
            put('\\"')
        elif o.decoder == "addr":
            texts.append(f"t_{o.key}")
            remember = f"remember_addr(&t_{o.key}, e->{a[0]}, e->{a[1]} == AF_INET6)"
            prep.append(
                f"ok = ok && (!{flag} || {remember});" if flag else f"ok = ok && {remember};"
            )
            put(k + '\\"')
            value = f"o = put(o, t_{o.key}.text);"
            body.append(f"if {flag} {value}" if flag else value)
            put('\\"')
        elif o.decoder == "tcp_state":
            put(k + '\\"')
            body.append(f"o = put(o, states[e->{a[0]}]);")
            put('\\"')
        elif o.decoder == "netns_name":
            put(k)
            body.append("memcpy(o, ns_json[ns], ns_len);\n\t\to += ns_len;")
    netns = next((o.args[0] for o in outs if o.decoder == "netns_name"), None)
    lookup = ""
    if netns is not None:
        lookup = f"""int ns = -1;
		if (last_ns >= 0 && ns_ids[last_ns] == e->{netns}) {{
			ns = last_ns;
		}} else {{
			for (int i = 0; i < n_ns; i++)
				if (ns_ids[i] == e->{netns}) {{
					ns = i;
					break;
				}}
		}}
		if (ns < 0) {{
			*why = NEW_NETNS;
			*inode = e->{netns};
			break;
		}}
		last_ns = ns;
		size_t ns_len = strlen(ns_json[ns]);"""
    else:
        lookup = "size_t ns_len = 0;"
    if cgroup is not None:
        lookup += f"""
		int cg = -1;
		if (last_cg >= 0 && cg_ids[last_cg] == e->{cgroup}) {{
			cg = last_cg;
		}} else {{
			for (int i = 0; i < n_cg; i++)
				if (cg_ids[i] == e->{cgroup}) {{
					cg = i;
					break;
				}}
		}}
		if (cg < 0) {{
			*why = NEW_CGROUP;
			*cgroup = e->{cgroup};
			break;
		}}
		last_cg = cg;
		size_t cg_len = strlen(cg_json[cg]);"""
    else:
        lookup += "\n\t\tsize_t cg_len = 0;"
    declared = "".join(f", {t} = {{0}}" for t in texts)
    steps = "\n\t\t".join(body)
    checks = "\n\t\t".join(prep)
    return f"""/* Generated by pyprobe/core/native.py from bpf/pyprobe.h and the probe's
 * manifest: struct {layout.name} to NDJSON. Do not edit: edit those. */
#include "{RUNTIME.name}" /* <linux/types.h> first: the header's __u32... */
#include "pyprobe.h"

long pyprobe_{layout.name}_ndjson(const char *prod_page, const char *data, uint64_t mask,
		uint64_t *cons, uint64_t mono_to_wall_ns, const char *const *states,
		const uint32_t *ns_ids, const char *const *ns_json, int n_ns,
		char *out, long cap, int *why, uint32_t *inode,
		const uint64_t *cg_ids, const char *const *cg_json, int n_cg, uint64_t *cgroup)
{{
	uint64_t at = *cons;
	uint64_t prod = __atomic_load_n((const uint64_t *)prod_page, __ATOMIC_ACQUIRE);
	long used = 0;
	int last_ns = -1, last_cg = -1;
	struct text unused = {{0}}{declared};
	(void)unused;
	(void)states;
	(void)last_ns;
	(void)last_cg;
	(void)cg_ids;
	(void)cg_json;
	(void)n_cg;
	(void)cgroup;

	*why = CAUGHT_UP;
	while (at < prod) {{
		const char *rec = data + (at & mask);
		uint32_t len = __atomic_load_n((const uint32_t *)rec, __ATOMIC_ACQUIRE);
		uint32_t size = len & ~(BUSY | DISCARD);
		uint64_t next = at + ((size + HDR + 7) & ~7ull);
		if (len & BUSY)
			break; /* reserved, not yet submitted */
		if (len & DISCARD) {{
			at = next;
			continue;
		}}
		if (size != sizeof(struct {layout.name})) {{
			*why = HAND_BACK;
			break;
		}}
		const struct {layout.name} *e = (const void *)(rec + HDR);
		{lookup}
		if (cap - used < (long)(1024 + ns_len + cg_len)) {{
			*why = OUT_FULL;
			break;
		}}
		int ok = 1;
		{checks}
		if (!ok) {{
			*why = HAND_BACK;
			break;
		}}
		char *o = out + used;
		{steps}
		*o++ = '}}';
		*o++ = '\\n';
		used = o - out;
		at = next;
	}}
	/* Publish the space given back only after every read of it (release). */
	__atomic_store_n(cons, at, __ATOMIC_RELEASE);
	return used;
}}
"""


def _build(text: str, out: Path) -> bool:
    cc = shutil.which(os.environ.get("CC", "cc"))
    if cc is None:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}")
    src = out.with_name(f".{out.name}.{os.getpid()}.c")
    src.write_text(text)
    try:
        r = subprocess.run(
            [cc, "-O2", "-shared", "-fPIC", "-I", str(bpf_dir()), "-I", str(RUNTIME.parent),
             "-o", str(tmp), str(src)],
            capture_output=True,
        )  # fmt: skip
    finally:
        src.unlink(missing_ok=True)
    if r.returncode != 0:
        tmp.unlink(missing_ok=True)
        return False
    tmp.replace(out)  # atomic: a concurrent start loads one or the other whole
    return True


def library(outs: Sequence[Output], layout: Layout, header: Header) -> Any:
    """The formatter function for these outputs, built (once) and loaded;
    None where there can be none."""
    if os.environ.get(NATIVE_ENV) == "off" or not ringbuf.available() or not supported(outs):
        return None
    text = source(outs, layout, header)
    try:
        shared = (bpf_dir() / "pyprobe.h").read_bytes() + RUNTIME.read_bytes()
    except OSError:
        return None
    cc = os.environ.get("CC", "cc")
    digest = hashlib.sha256(text.encode() + shared + cc.encode()).hexdigest()[:16]
    name = f"{layout.name}_ndjson-{digest}.so"
    home = cache.directory()
    lib = None
    try:
        if home is not None:
            so = home / cache.NATIVE / name
            lib = ctypes.CDLL(str(so)) if so.exists() or _build(text, so) else None
            if lib is not None:
                os.utime(so)  # used: kept by cache.prune for another MAX_AGE_S
    except OSError:
        pass  # e.g. the cache not writable (CAP_BPF without root): build it for us alone
    try:
        if lib is None:  # no cache: built for this process, the file gone once loaded
            with tempfile.TemporaryDirectory(prefix="pyprobe-native-") as tmp:
                path = Path(tmp) / name
                lib = ctypes.CDLL(str(path)) if _build(text, path) else None
    except OSError:
        return None
    if lib is None:
        return None
    fn = getattr(lib, f"pyprobe_{layout.name}_ndjson")
    fn.restype = ctypes.c_long
    fn.argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64,
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
        ctypes.c_void_p, ctypes.c_long, ctypes.POINTER(ctypes.c_int),
        ctypes.POINTER(ctypes.c_uint32),
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.POINTER(ctypes.c_uint64),
    ]  # fmt: skip
    _LOADED.append(lib)  # the function's library, for as long as the process runs
    return fn


class NativeJson:
    """Takes over a RingReader of one struct's records: each consume()
    formats what is there into `chunks` (bytes), in ring order."""

    def __init__(
        self,
        fn: Any,
        reader: ringbuf.RingReader,
        netns_json: Callable[[int], str],
        slow: Callable[[bytes], str],
        cgroup_json: Callable[[int], tuple[str, bool]] = lambda _id: ("", True),
    ) -> None:
        self._fn = fn
        self._reader = reader
        self._netns_json, self._slow, self._cgroup_json = netns_json, slow, cgroup_json
        self._states_keep = [s.encode() for s in STATES]
        self._states = (ctypes.c_char_p * len(STATES))(*self._states_keep)
        length = mmap.PAGESIZE + 2 * reader.size
        # Our own read-only view: Python's mmap object gives no address.
        addr = _libc.mmap(None, length, _PROT_READ, _MAP_SHARED, reader.fd, mmap.PAGESIZE)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap of the ring buffer failed")
        self._map, self._length = addr, length
        self._cons = ctypes.addressof(reader.consumer)
        self._out = ctypes.create_string_buffer(_OUT)
        self._why, self._inode = ctypes.c_int(), ctypes.c_uint32()
        self._cgroup = ctypes.c_uint64()
        self.chunks: list[bytes] = []
        reader.take_over(self.consume)

    def consume(self, reader: ringbuf.RingReader) -> int:
        # Names are asked for again each time (as json_lines does per batch):
        # a namespace may have been named since.
        ids: list[int] = []
        names: list[bytes] = []
        table: tuple = ((ctypes.c_uint32 * 1)(), (ctypes.c_char_p * 1)())
        cg_ids: list[int] = []
        cg_texts: list[bytes] = []
        cg_table: tuple = ((ctypes.c_uint64 * 1)(), (ctypes.c_char_p * 1)())
        handed = 0
        while True:
            n = self._fn(
                self._map, self._map + mmap.PAGESIZE, reader.mask, self._cons,
                MONO_TO_WALL_NS, self._states, table[0], table[1], len(ids), self._out, _OUT,
                ctypes.byref(self._why), ctypes.byref(self._inode),
                cg_table[0], cg_table[1], len(cg_ids), ctypes.byref(self._cgroup),
            )  # fmt: skip
            if n:
                self.chunks.append(ctypes.string_at(self._out, n))
                handed += 1
            why = self._why.value
            if why == _NEW_NETNS:
                ids.append(self._inode.value)
                names.append(self._netns_json(self._inode.value).encode())
                table = ((ctypes.c_uint32 * len(ids))(*ids), (ctypes.c_char_p * len(names))(*names))
            elif why == _NEW_CGROUP:
                fragment, known = self._cgroup_json(self._cgroup.value)
                if not known or len(cg_ids) >= MAX_CGROUPS:
                    # Not named yet (a container started since the cgroup
                    # table's last walk), or too many to keep: this record
                    # through Python, which names it once it can.
                    raw = reader.take_one()
                    if raw is not None:
                        self.chunks.append(self._slow(raw).encode())
                    handed += 1
                    continue
                cg_ids.append(self._cgroup.value)
                cg_texts.append(fragment.encode())
                cg_table = (
                    (ctypes.c_uint64 * len(cg_ids))(*cg_ids),
                    (ctypes.c_char_p * len(cg_texts))(*cg_texts),
                )
            elif why == _HAND_BACK:
                raw = reader.take_one()
                if raw is not None:
                    self.chunks.append(self._slow(raw).encode())
                handed += 1
            elif why != _OUT_FULL:
                return handed

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out

    def close(self) -> None:
        self._reader.take_over(None)
        if self._map:
            _libc.munmap(self._map, self._length)
            self._map = 0
