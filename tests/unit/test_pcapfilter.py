"""pcap filters translated from classic BPF into C (core/pcapfilter.py): the
generated C, compiled with the system's cc exactly as the trace program
includes it (bpf/trace_filter.h), must give libpcap's own verdict
(bpf_filter(), its interpreter) on the same bytes, over thousands of
packets: Ethernet and raw IP, IPv4 with and without options, fragments,
IPv6, ARP, VLAN, truncated captures; and expressions that use every kind of
instruction libpcap emits (indirect loads, scratch memory, arithmetic by a
register, shifts, division by zero at run time)."""

from __future__ import annotations

import ctypes
import random
import shutil
import struct
import subprocess

import pytest

from pyprobe.core import pcapfilter
from pyprobe.core.pcapfilter import DLT_EN10MB, DLT_RAW, PyprobeError
from pyprobe.paths import bpf_dir

pytestmark = pytest.mark.skipif(
    not shutil.which("cc"), reason="cc missing (make setup installs it)"
)

EXPRESSIONS = [
    "host 10.0.0.2",
    "src host 10.0.0.1 and dst host 10.0.0.2",
    "net 10.0.0.0/30",
    "not net 10.0.0.0/8",
    "tcp port 80",
    "udp port 53 or tcp port 443",
    "portrange 50-90",
    "host 10.0.0.2 and tcp port 8080",
    "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[13] = 18",
    "icmp[icmptype] = icmp-echo",
    "icmp and icmp[icmptype] != icmp-echoreply",
    "ip[6:2] & 0x1fff != 0",
    "ip[0] & 0xf > 5",
    "ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2) > 0",
    "(ip[2:2] / 3) % 7 = 1",
    "ip[8] << (ip[0] & 0xf) > 600",
    "ip[8] >> (ip[1] & 0x3f) = 0",
    "ip[2:2] / (ip[8] - 64) > 2",
    "ip[2:2] % (ip[8] - 64) = 1",
    "ip[1] ^ 0xff = 0xff and ip[8] * 3 > 150",
    "0 - ip[8] > 4294967000",
    "len >= 100 and len < 300",
    "greater 200",
    "ip6 and tcp port 80",
    "ip6 host fd00::2",
    "ether host 02:00:00:00:00:02",
    "ether broadcast or arp",
    "vlan and ip host 10.0.0.2",
    "udp[8:4] = 0xdeadbeef",
    "tcp port 80 and (tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420)",
]

IPS = ["10.0.0.1", "10.0.0.2", "10.0.0.5", "192.168.1.9"]
PORTS = [53, 80, 443, 8080, 60, 12345]


def _ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def _l4(rng: random.Random, proto: int) -> bytes:
    payload = (b"GET / HTTP" if rng.random() < 0.3 else b"") + bytes(
        rng.randrange(256) for _ in range(rng.choice([0, 1, 4, 7, 30, 150, 400]))
    )
    if proto == 6:
        offset = rng.choice([5, 5, 8, 10])  # TCP header words (options)
        flags = rng.choice([0x02, 0x12, 0x10, 0x18, 0x11, 0x04])
        header = struct.pack(
            "!HHIIBBHHH",
            rng.choice(PORTS),
            rng.choice(PORTS),
            rng.randrange(1 << 32),
            rng.randrange(1 << 32),
            offset << 4,
            flags,
            65535,
            0,
            0,
        )
        return header + bytes(4 * offset - 20) + payload
    if proto == 17:
        data = (b"\xde\xad\xbe\xef" if rng.random() < 0.3 else b"") + payload
        return struct.pack("!HHHH", rng.choice(PORTS), rng.choice(PORTS), 8 + len(data), 0) + data
    if proto == 1:
        return bytes([rng.choice([0, 8, 3, 11]), 0, 0, 0, 0, 1, 0, rng.randrange(256)]) + payload
    return payload


def _ipv4(rng: random.Random) -> bytes:
    proto = rng.choice([6, 6, 17, 17, 1, 47])
    ihl = rng.choice([5, 5, 5, 6, 8, 15])
    body = _l4(rng, proto)
    frag = rng.choice([0, 0, 0, 0x4000, 0x2000, 185])
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x40 | ihl,
        rng.randrange(256),
        4 * ihl + len(body),
        rng.randrange(65536),
        frag,
        rng.choice([1, 64, 65, 66, 128, 200]),
        proto,
        0,
        _ip(rng.choice(IPS)),
        _ip(rng.choice(IPS)),
    )
    return header + bytes(4 * ihl - 20) + body


def _ipv6(rng: random.Random) -> bytes:
    proto = rng.choice([6, 17, 58])
    body = _l4(rng, proto)
    addr = [bytes.fromhex("fd00" + "0" * 27 + str(n)) for n in (1, 2, 3)]
    return (
        struct.pack("!IHBB", 0x60000000, len(body), proto, 64)
        + rng.choice(addr)
        + rng.choice(addr)
        + body
    )


def _frame(rng: random.Random) -> bytes:
    macs = [bytes.fromhex(m) for m in ("020000000001", "020000000002", "ffffffffffff")]
    dst, src = rng.choice(macs), rng.choice(macs[:2])
    kind = rng.random()
    if kind < 0.7:
        return dst + src + b"\x08\x00" + _ipv4(rng)
    if kind < 0.82:
        return dst + src + b"\x86\xdd" + _ipv6(rng)
    if kind < 0.9:
        arp = bytes.fromhex("0001080006040001") + src + _ip(rng.choice(IPS)) + bytes(6)
        return dst + src + b"\x08\x06" + arp + _ip(rng.choice(IPS))
    return dst + src + b"\x81\x00" + struct.pack("!H", 42) + b"\x08\x00" + _ipv4(rng)


def packets(linktype: int, n: int, seed: int) -> list[tuple[bytes, int]]:
    """(captured bytes, wire length): whole packets, and some cut short."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        frame = _frame(rng)
        if linktype == DLT_RAW:
            if frame[12:14] not in (b"\x08\x00", b"\x86\xdd"):
                continue
            frame = frame[14:]
        wire = len(frame)
        cut = rng.random()
        if cut < 0.1:
            frame = frame[: rng.randrange(len(frame) + 1)]
        out.append((frame[: pcapfilter.WINDOW], wire))
    return out


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """Every expression's C for both link types, in one shared library:
    run(i, packet, caplen, wirelen) is the i-th filter's verdict."""
    bodies: list[tuple[str, int, str]] = []
    for expression in EXPRESSIONS:
        f = pcapfilter.compile_filter(expression)
        for linktype, body in ((DLT_EN10MB, f.ethernet), (DLT_RAW, f.raw)):
            if body is not None:
                bodies.append((expression, linktype, body))
    src = tmp_path_factory.mktemp("filters") / "filters.c"
    functions = "\n".join(
        f"static u32 f{i}(const u8 *P_, u32 caplen, u32 wirelen) {body}"
        for i, (_, _, body) in enumerate(bodies)
    )
    cases = " ".join(f"case {i}: return f{i}(P_, caplen, wirelen);" for i in range(len(bodies)))
    src.write_text(
        "#include <stdint.h>\n"
        "typedef uint8_t u8; typedef uint32_t u32; typedef uint64_t u64;\n"
        '#include "trace_filter.h"\n'
        f"{functions}\n"
        "u32 run(int which, const u8 *P_, u32 caplen, u32 wirelen)\n"
        f"{{ switch (which) {{ {cases} }} return 0; }}\n"
    )
    lib = src.with_suffix(".so")
    subprocess.run(
        ["cc", "-O1", "-Wall", "-Werror", "-Wno-unused-label", "-shared", "-fPIC",
         f"-I{bpf_dir()}", "-o", str(lib), str(src)],
        check=True,
    )  # fmt: skip
    dll = ctypes.CDLL(str(lib))
    dll.run.restype = ctypes.c_uint32
    dll.run.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint32]
    return dll, bodies


def test_every_expression_translates_for_ethernet():
    for expression in EXPRESSIONS:
        assert pcapfilter.compile_filter(expression).ethernet is not None, expression


def test_the_translation_gives_libpcaps_verdict_on_every_packet(compiled):
    dll, bodies = compiled
    frames = {lt: packets(lt, 1500, seed=lt) for lt in (DLT_EN10MB, DLT_RAW)}
    buffer_size = 2 * pcapfilter.WINDOW  # PF_BUFFER: the program's map value
    judged = matched = 0
    for i, (expression, linktype, _) in enumerate(bodies):
        insns = pcapfilter.compile_filter(expression).insns[linktype]
        hits = 0
        for data, wire in frames[linktype]:
            ours = dll.run(i, data.ljust(buffer_size, b"\0"), len(data), wire)
            theirs = pcapfilter.bpf_filter(insns, data, wire)
            assert ours == theirs, (expression, linktype, data.hex(), wire)
            hits += bool(theirs)
        judged += len(frames[linktype])
        matched += hits
        if linktype == DLT_EN10MB:
            # each expression both matches and misses here: the comparison means something
            assert 0 < hits < len(frames[linktype]), (expression, hits)
    assert judged >= 80_000 and matched >= 5_000


def test_the_buffer_beyond_the_capture_is_never_read(compiled):
    """Bytes past caplen (what is left in the program's buffer from an
    earlier packet) change no verdict: every load is checked first."""
    dll, bodies = compiled
    for i, (expression, linktype, _) in enumerate(bodies):
        for data, wire in packets(linktype, 200, seed=99):
            clean = dll.run(i, data.ljust(512, b"\0"), len(data), wire)
            dirty = dll.run(i, data.ljust(512, b"\xff"), len(data), wire)
            assert clean == dirty, expression


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("ip6 protochain 6", "jumps backward"),
        ("tcp[300] = 1", "reads byte 314 of the packet; pyprobe reads the first 256"),
        ("ether[400:2] = 1", "reads byte 401"),
        ("host 10.0.0.1 and", "syntax error"),
        ("tcp port 99999", "port"),
        ("   ", "an empty filter"),
    ],
)
def test_what_cannot_be_translated_is_one_line(expression, says):
    with pytest.raises(PyprobeError) as e:
        pcapfilter.compile_filter(expression)
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_link_type_libpcap_refuses_matches_nothing_there():
    f = pcapfilter.compile_filter("ether host 02:00:00:00:00:02")
    assert f.ethernet is not None and f.raw is None
    assert [flag.partition("=")[0] for flag in f.cflags()] == ["-DTRACE_FILTER_ETH"]


def test_jumps_are_gotos_forward_and_loads_are_checked():
    insns = pcapfilter.compile_bpf("tcp port 80", DLT_EN10MB)
    body = pcapfilter.to_c(insns)
    assert "goto" in body and "while" not in body and "for" not in body
    # every label is defined after the gotos that name it
    import re

    for m in re.finditer(r"goto L(\d+);", body):
        assert body.index(f"L{m.group(1)}: ") > m.start()
    loads = re.findall(r"PF_LD\d+\(", body)
    checks = re.findall(r"> caplen\) return 0;", body)
    assert len(loads) == len(checks) > 0
