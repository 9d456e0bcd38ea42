"""How an event record reads: the manifest's `[event].fields`, turned into code.

Each entry names an output key and how its value comes from the record's
fields (core/events.py reads those from bpf/pyprobe.h):

    "pid"                                  the field, as a number
    "time = wall_time(ts_ns)"              a decoder of one or more fields
    "ms = ms(delta_ns, DELTA_KNOWN)"       ... null unless a flag bit is set
    "reason = reset_reason(reason) if kind == TCP_RESET_SENT"   ... else ""

A field of the struct that no entry uses (but `flags`) is appended as a
number, so a member added to the header reaches every output.

From one description come a record's dict (decode_row: the text lines, the
filters), its NDJSON line straight from the unpacked row (json_lines: ~1.5x
less CPU than a dict and json.dumps), and, where every decoder has one, the
same line in C (core/native.py). Python's functions are generated once per
probe and compiled with exec, as namedtuple and dataclasses make theirs: a
busy stream runs them 100k+ times a second.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import PyprobeError
from ..kernel.names import FAMILIES, eth_protocol, ip_protocol, tcp_state
from .events import Header, Layout
from .text import quoted

FLAGS = "flags"  # the member flag arguments test
# CLOCK_MONOTONIC (bpf_ktime_get_ns) -> wall clock, fixed once per process.
MONO_TO_WALL_NS = time.time_ns() - time.monotonic_ns()

# decoder -> (kinds of its arguments, what it gives). Argument kinds: "field",
# "flag" (a PYPROBE_F_ bit of `flags`), "prefix" (of #defines), "id" (the
# literal word: the field is a namespace id that may be a cookie), and
# optional ones with a "?".
DECODERS: dict[str, tuple[str, ...]] = {
    "num": ("field", "flag?"),
    "wall_time": ("field",),
    "hex": ("field",),
    "mac": ("field",),
    "comm": ("field",),
    "flag": ("flag",),
    "family": ("field", "flag?"),
    "addr": ("field", "field", "flag?"),
    "tcp_state": ("field",),
    "ms": ("field", "flag?"),
    "netns": ("field", "id?"),
    "netns_name": ("field", "id?"),
    "drop_reason": ("field",),
    "reset_reason": ("field",),
    "ksym": ("field",),
    "ifname": ("field", "field"),
    "eth_protocol": ("field",),
    "ip_protocol": ("field", "flag?"),
    "enum": ("field", "prefix"),
    "cgroup_path": ("field",),
    "container": ("field",),
    "pod": ("field",),
}
_ENTRY = re.compile(
    r"^(?P<key>\w+)(?:\s*=\s*(?P<fn>\w+)\((?P<args>[^)]*)\)"
    r"(?:\s+if\s+(?P<when>\w+)\s*==\s*(?P<const>\w+))?)?$"
)


@dataclass(frozen=True)
class Output:
    key: str
    decoder: str
    args: tuple[str, ...]
    when: tuple[str, int] | None = None  # (field, value): else ""


class EventSpecError(PyprobeError):
    pass


def outputs(entries: Iterable[str], layout: Layout, header: Header, where: str) -> list[Output]:
    """The manifest's entries, checked against the struct and the header,
    with the fields no entry uses appended as numbers."""
    fields = set(layout.fields())
    out: list[Output] = []
    used = {FLAGS}
    for text in entries:
        m = _ENTRY.match(text.strip())
        if m is None:
            raise EventSpecError(f"{where}: cannot read {text!r} (KEY or KEY = decoder(args))")
        key, fn = m.group("key"), m.group("fn") or "num"
        args = tuple(a.strip() for a in (m.group("args") or key).split(",") if a.strip())
        kinds = DECODERS.get(fn)
        if kinds is None:
            raise EventSpecError(f"{where}: {key}: no decoder {fn!r} ({', '.join(DECODERS)})")
        required = [k for k in kinds if not k.endswith("?")]
        if not len(required) <= len(args) <= len(kinds):
            raise EventSpecError(f"{where}: {key}: {fn} takes {', '.join(kinds)}")
        resolved = []
        for kind, arg in zip(kinds, args, strict=False):
            kind = kind.rstrip("?")
            if kind == "field":
                if arg not in fields:
                    raise EventSpecError(f"{where}: {key}: struct {layout.name} has no {arg!r}")
                used.add(arg)
            elif kind == "flag":
                header.constant("F_" + arg)  # an unknown bit is an error now
            elif kind == "id" and arg != "id":
                raise EventSpecError(f"{where}: {key}: expected the word id, got {arg!r}")
            resolved.append(arg)
        when = None
        if m.group("when"):
            if m.group("when") not in fields:
                raise EventSpecError(f"{where}: {key}: struct {layout.name} has no {m['when']!r}")
            used.add(m.group("when"))
            when = (m.group("when"), header.constant(m.group("const")))
        out.append(Output(key, fn, tuple(resolved), when))
    out += [Output(f, "num", (f,)) for f in layout.fields() if f not in used]
    return out


# -- Python ---------------------------------------------------------------------
_ADDR4: dict[bytes, str] = {}
_ADDR6: dict[bytes, str] = {}
_COMMS: dict[bytes, str] = {}
_CACHE_MAX = 65536  # texts kept per cache; cleared when full (a scan of many addresses)


def addr_text(family: int, raw: bytes) -> str:
    """An address's text, cached: a busy stream repeats a few peers."""
    names = _ADDR6 if family == socket.AF_INET6 else _ADDR4
    text = names.get(raw)
    if text is None:
        if len(names) >= _CACHE_MAX:
            names.clear()
        if family == socket.AF_INET6:
            text = socket.inet_ntop(socket.AF_INET6, raw)
        else:
            text = socket.inet_ntop(socket.AF_INET, raw[:4])
        names[raw] = text
    return text


def mac_text(raw: bytes) -> str:
    """A link-layer address as `bridge fdb` prints it."""
    return ":".join(f"{b:02x}" for b in raw[:6])


def comm_text(raw: bytes) -> str:
    text = _COMMS.get(raw)
    if text is None:
        if len(_COMMS) >= _CACHE_MAX:
            _COMMS.clear()
        text = _COMMS[raw] = raw.rstrip(b"\0").decode(errors="replace")
    return text


STATES = tuple(tcp_state(i) for i in range(256))  # a u8 in the record


class Context:
    """What generated code reads besides the record: label decoders (names
    from the kernel and the netlink side), namespace names, constants."""

    def __init__(self, decoders: Any, header: Header, netns_name: Callable[[int], str | None]):
        self.dec = decoders
        self.header = header
        self.netns_name = netns_name


def _value(o: Output, c: Context, consts: dict[str, Any]) -> str:
    """A Python expression for an output's value, the fields as locals."""
    a = o.args

    def flagged(expr: str, otherwise: str, at: int) -> str:
        if len(a) <= at:
            return expr
        bit = c.header.constant("F_" + a[at])
        return f"({expr} if {FLAGS} & {bit} else {otherwise})"

    fn = o.decoder
    if fn == "num":
        expr = flagged(a[0], "None", 1)
    elif fn == "wall_time":
        expr = f"({a[0]} + {MONO_TO_WALL_NS}) / 1_000_000_000"
    elif fn == "hex":
        expr = f"(hex({a[0]}) if {a[0]} else '')"
    elif fn == "comm":
        expr = f"comm_text({a[0]})"
    elif fn == "mac":
        expr = f"mac_text({a[0]})"
    elif fn == "flag":
        expr = f"bool({FLAGS} & {c.header.constant('F_' + a[0])})"
    elif fn == "family":
        expr = flagged(f"FAMILIES.get({a[0]}, '')", "''", 1)
    elif fn == "addr":
        expr = flagged(f"addr_text({a[1]}, {a[0]})", "''", 2)
    elif fn == "tcp_state":
        expr = f"STATES[{a[0]}]"
    elif fn == "ms":
        expr = flagged(f"{a[0]} / 1_000_000", "None", 1)
    elif fn == "netns":
        expr = f"dec.netns_inode({a[0]})" if len(a) > 1 else a[0]
    elif fn == "netns_name":
        inode = f"dec.netns_inode({a[0]})" if len(a) > 1 else a[0]
        expr = f"netns_name({inode})"
    elif fn == "drop_reason":
        expr = f"dec.drop_reasons.get({a[0]}) or f'REASON_{{{a[0]}}}'"
    elif fn == "reset_reason":
        expr = f"dec.reset_reasons.get({a[0]}) or str({a[0]})"
    elif fn == "ksym":
        expr = f"dec.symbols.name({a[0]})"
    elif fn == "ifname":
        expr = f"(dec.ifname({a[0]}, {a[1]}) if {a[0]} else '')"
    elif fn == "eth_protocol":
        expr = f"eth_protocol({a[0]})"
    elif fn == "ip_protocol":
        expr = flagged(f"ip_protocol({a[0]})", "''", 1)
    elif fn in ("cgroup_path", "container", "pod"):
        expr = f"dec.cgroup_text({a[0]}, {fn!r})"
    elif fn == "enum":
        name = f"ENUM_{a[1]}"
        consts[name] = c.header.enum(a[1])
        expr = f"{name}.get({a[0]}) or str({a[0]})"
    else:  # pragma: no cover - outputs() checked the name
        raise EventSpecError(f"no decoder {fn}")
    if o.when is not None:
        expr = f"({expr} if {o.when[0]} == {o.when[1]} else '')"
    return expr


def _namespace(c: Context, consts: dict[str, Any]) -> dict[str, Any]:
    return {
        "dec": c.dec,
        "netns_name": c.netns_name,
        "comm_text": comm_text,
        "mac_text": mac_text,
        "addr_text": addr_text,
        "FAMILIES": FAMILIES,
        "STATES": STATES,
        "eth_protocol": eth_protocol,
        "ip_protocol": ip_protocol,
        "quoted": quoted,
        **consts,
    }


def _unpack(layout: Layout) -> str:
    # row[0] is the record's length (the ring buffer's header), then the fields
    return f"(_, {', '.join(layout.fields())},) = row"


def decoder(outs: list[Output], layout: Layout, c: Context) -> Callable[[tuple], dict[str, Any]]:
    """row -> the event's dict; row as ringbuf.py unpacks it: (length, *fields)."""
    consts: dict[str, Any] = {}
    items = ", ".join(f"{o.key!r}: {_value(o, c, consts)}" for o in outs)
    source = f"def decode_row(row):\n    {_unpack(layout)}\n    return {{{items}}}\n"
    scope = _namespace(c, consts)
    exec(compile(source, f"<{layout.name} decoder>", "exec"), scope)
    return scope["decode_row"]


def _json(o: Output, c: Context, consts: dict[str, Any]) -> tuple[str, str, str]:
    """(format, value expression, statement before it) of an output's JSON.
    Times and milliseconds are written as exact decimals of their
    nanoseconds (the float json.loads reads from them is decode_row's)."""
    a, fn = o.args, o.decoder
    bit = None
    flag_at = {"num": 1, "ms": 1, "family": 1, "addr": 2, "ip_protocol": 1}.get(fn)
    if flag_at is not None and len(a) > flag_at:
        bit = c.header.constant("F_" + a[flag_at])
    if fn == "wall_time" and o.when is None:
        return (
            "%d.%09d",
            f"_s_{o.key}, _n_{o.key}",
            (f"_s_{o.key}, _n_{o.key} = divmod({a[0]} + {MONO_TO_WALL_NS}, 1_000_000_000)"),
        )
    if fn == "ms" and o.when is None:
        text = f"f'{{{a[0]} // 1_000_000}}.{{{a[0]} % 1_000_000:06d}}'"
        return "%s", (f"({text} if {FLAGS} & {bit} else 'null')" if bit else text), ""
    if fn in ("num", "netns") and o.when is None:
        value = _value(o, c, consts)
        if bit is None:
            return "%d", value, ""
        return "%s", f"({a[0]} if {FLAGS} & {bit} else 'null')", ""
    if fn == "flag":
        return "%s", f"('true' if {FLAGS} & {c.header.constant('F_' + a[0])} else 'false')", ""
    if fn == "netns_name" and o.when is None:
        inode = f"dec.netns_inode({a[0]})" if len(a) > 1 else a[0]
        return "%s", f"_spaces.get({inode}) or _space({inode})", ""
    if fn in ("family", "addr", "tcp_state", "hex", "mac") and o.when is None:
        return '"%s"', _value(o, c, consts), ""  # never a character JSON escapes
    return "%s", f"_json({_value(o, c, consts)})", ""


def _json_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quoted(value)
    return repr(value)


def json_lines(
    outs: list[Output], layout: Layout, c: Context
) -> Callable[[Iterable[tuple], Callable[[int], str]], str]:
    """(rows, netns_json) -> their NDJSON lines, each the values decode_row
    gives, without the dict in between. netns_json(inode) gives a
    namespace's name as JSON (a quoted name, or null), asked once a batch:
    a namespace may be named meanwhile."""
    consts: dict[str, Any] = {}
    formats, values, before = [], [], []
    for o in outs:
        fmt, value, statement = _json(o, c, consts)
        formats.append(f'"{o.key}":{fmt}')
        values.append(value)
        if statement:
            before.append(statement)
    template = "{" + ",".join(formats) + "}\n"
    body = "\n".join(f"        {s}" for s in before)
    source = f"""def json_lines(rows, netns_json):
    out = []
    add = out.append
    _spaces = {{}}

    def _space(inode):
        text = _spaces[inode] = netns_json(inode)
        return text

    for row in rows:
        {_unpack(layout)}
{body}
        add(FORMAT % ({", ".join(values)},))
    return "".join(out)
"""
    scope = _namespace(c, consts)
    scope.update(FORMAT=template, _json=_json_value)
    exec(compile(source, f"<{layout.name} json>", "exec"), scope)
    return scope["json_lines"]
