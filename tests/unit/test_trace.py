"""pyprobe trace over a fake loader: hops grouped into packets, their text
and JSON, the records of two sizes, the filter compiled in, one-line errors."""

import ctypes
import json
import struct
from dataclasses import replace

import pytest
from fakes import FakeBTF, FakeLoader, fake_env

from pyprobe import cli
from pyprobe.cli.common import Context
from pyprobe.core.events import header
from pyprobe.probes import default
from pyprobe.views import pcapng, why
from pyprobe.views import trace as view
from tests.support import read_with_libpcap

TraceEvent = header().layout("trace_event").ctype
HOOKS = {v: k for k, v in header().enum("HOP_").items()}  # name -> number
F_FIRST, F_ETHERNET = header().constant("F_FIRST"), header().constant("F_ETHERNET")
NETFILTER_DROP = 11
HOP_SIZE = TraceEvent.data.offset  # a hop without the packet's bytes


def trace_env():
    manifest = default().manifests["trace"]
    targets = {p.target for h in manifest.hooks for p in h.points}
    fields = {o.path: (8 * i, o.size) for i, o in enumerate(manifest.offsets)}
    btf = FakeBTF(
        fields,
        {f"btf_trace_{t}" for t in targets},
        enums={
            "skb_drop_reason": {
                2: "SKB_DROP_REASON_NOT_SPECIFIED",
                11: "SKB_DROP_REASON_NETFILTER_DROP",
            }
        },
    )
    return replace(fake_env(), fake_btf=btf)


def icmp_echo(seq: int) -> bytes:
    eth = bytes(12) + b"\x08\x00"
    ip = bytes([0x45, 0, 0, 84, 0, seq, 0x40, 0, 64, 1, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2])
    return eth + ip + bytes([8, 0, 0, 0, 0, 7, 0, seq]) + bytes(56)


def hop(pkt, hook, ts, netns=4026532001, ifindex=0, reason=0, data=b"", flags=0):
    ev = TraceEvent(
        ts_ns=ts, pkt=pkt, skaddr=0xFFFF888000001000 + pkt, netns=netns, ifindex=ifindex,
        len=84, reason=reason, hook=HOOKS[hook], flags=flags,
    )  # fmt: skip
    if not data:
        return bytes(ev)[:HOP_SIZE]
    ctypes.memmove(ctypes.addressof(ev) + HOP_SIZE, data, len(data))
    ev.caplen, ev.wirelen = len(data), len(data)
    ev.flags |= F_FIRST | F_ETHERNET
    return bytes(ev)


def decoded(h: dict) -> dict:
    """A hop as the probe decodes it, with the fields the view reads."""
    base = {
        "ts_ns": 0, "time": 0.0, "pkt": 1, "skaddr": "0x1", "hook": "queue", "netns": 1,
        "netns_name": "ns-a", "ifindex": 2, "device": "veth0", "len": 84, "reason": 0,
        "drop_reason": "", "location": "", "pid": 0, "comm": "", "flags": 0, "caplen": 0,
        "wirelen": 0, "data": b"",
    }  # fmt: skip
    return {**base, **h}


def test_hops_are_grouped_per_packet_and_shown_in_time_order():
    kinds = {(1, 2): "veth", (2, 3): "bridge"}
    tracker = view.Tracker(lambda ns, i: kinds.get((ns, i), ""), idle=1.0)
    first = decoded({"pkt": 1, "ts_ns": 1000, "flags": F_FIRST | F_ETHERNET, "data": icmp_echo(1),
                     "caplen": 98, "wirelen": 98})  # fmt: skip
    hops = [
        decoded({"pkt": 1, "ts_ns": 3000, "hook": "receive", "netns": 2, "netns_name": "ns-b",
                 "ifindex": 3, "device": "br0"}),
        first,
        decoded({"pkt": 2, "ts_ns": 2500, "hook": "queue"}),
        decoded({"pkt": 1, "ts_ns": 5000, "hook": "drop", "netns": 2, "netns_name": "ns-b",
                 "ifindex": 3, "device": "br0", "drop_reason": "NETFILTER_DROP",
                 "location": "nft_do_chain+0x46f"}),
    ]  # fmt: skip
    assert tracker.feed(hops, now=10.0) == []  # ended: it waits `grace` for its clones' hops
    done = tracker.feed([], now=10.05)
    assert [p.pkt for p in done] == [1]  # packet 2 has not ended, nor gone quiet
    assert view.lines(done[0], 1) == [
        "#1 10.0.0.1 > 10.0.0.2 ICMP echo request id 7 seq 1, 84 bytes",
        "      +0.000 ms  ns-a           veth0 (veth)           queued",
        "      +0.002 ms  ns-b           br0 (bridge)           into the stack",
        "      +0.004 ms  ns-b           br0 (bridge)           DROPPED: NETFILTER_DROP at "
        "nft_do_chain+0x46f",
    ]  # fmt: skip
    record = done[0].record()
    assert record["end"] == "dropped" and record["drop_reason"] == "NETFILTER_DROP"
    assert [(h["ms"], h["kind"], h["hook"]) for h in record["hops"]] == [
        (0.0, "veth", "queue"), (0.002, "bridge", "receive"), (0.004, "bridge", "drop"),
    ]  # fmt: skip
    assert tracker.feed([], now=10.5) == []
    assert [p.pkt for p in tracker.feed([], now=11.0)] == [2]  # quiet for `idle`: shown
    assert tracker.flush() == []


def test_a_clone_read_after_the_original_was_dropped_is_how_the_packet_ended():
    tracker = view.Tracker(idle=1.0)
    hops = [
        decoded({"pkt": 3, "ts_ns": 1, "hook": "receive"}),
        decoded({"pkt": 3, "ts_ns": 2, "hook": "drop", "drop_reason": "NO_SOCKET",
                 "location": "ping_rcv+0xb3"}),
        decoded({"pkt": 3, "ts_ns": 3, "hook": "copy", "comm": "ping", "pid": 77,
                 "flags": view.F_CLONE}),
        decoded({"pkt": 3, "ts_ns": 4, "hook": "consume", "location": "raw_recvmsg+0xac",
                 "flags": view.F_CLONE}),
    ]  # fmt: skip
    tracker.feed(hops[:2], now=0)
    (p,) = tracker.feed(hops[2:], now=0.01) + tracker.feed([], now=0.07)
    assert p.end == "freed" and p.dropped is None
    assert [view.what(h) for h in p.ordered][2:] == [
        "read by ping (77) (a clone)", "freed at raw_recvmsg+0xac (a clone)",
    ]  # fmt: skip


def test_a_hop_after_its_packet_was_shown_is_counted_not_shown():
    tracker = view.Tracker(idle=1.0)
    assert len(tracker.feed([decoded({"pkt": 5, "hook": "receive"})], now=0)) == 0
    assert len(tracker.feed([], now=1.0)) == 1  # quiet: shown
    assert tracker.feed([decoded({"pkt": 5, "hook": "copy", "ts_ns": 9})], now=3.0) == []
    assert tracker.late == 1 and tracker.flush() == []


def test_flush_shows_what_is_still_open_as_unfinished():
    tracker = view.Tracker(idle=60)
    assert tracker.feed([decoded({"pkt": 9, "hook": "queue"})], now=0) == []
    (p,) = tracker.flush()
    assert p.record()["end"] == "unfinished" and p.summary() == "(its first bytes were not seen)"


@pytest.mark.parametrize(
    ("raw", "ethernet", "text"),
    [
        (icmp_echo(3), True, "10.0.0.1 > 10.0.0.2 ICMP echo request id 7 seq 3, 84 bytes"),
        (icmp_echo(3)[14:], False, "10.0.0.1 > 10.0.0.2 ICMP echo request id 7 seq 3, 84 bytes"),
        (
            bytes([0x45, 0, 0, 60]) + bytes(5) + b"\x06" + bytes(2)
            + bytes([10, 0, 0, 1, 10, 0, 0, 2])
            + struct.pack("!HHIIBB", 40000, 80, 1, 0, 0x50, 0x02),
            False,
            "10.0.0.1:40000 > 10.0.0.2:80 TCP [S], 60 bytes",
        ),
        (bytes(12) + b"\x08\x06" + bytes(28), True, "ethertype 0x0806, 42 bytes"),
    ],
)  # fmt: skip
def test_a_packets_first_bytes_in_words(raw, ethernet, text):
    assert view.describe(raw, ethernet, len(raw)) == text


@pytest.fixture
def fake():
    events = [
        hop(1, "queue", 1000, ifindex=0, data=icmp_echo(1)),
        hop(1, "receive", 2000),
        hop(1, "drop", 3000, reason=NETFILTER_DROP),
        hop(2, "queue", 4000, data=icmp_echo(2)),
        hop(2, "consume", 5000),
    ]
    return FakeLoader(maps={"lost": {0: 0}, "stats": {0: 7, 1: 2}}, events=events)


def run(capsys, loader, *argv):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv), context=Context(env=trace_env, loader=lambda: loader))
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_the_command_compiles_the_filter_in_and_prints_packets(fake, capsys):
    code, out, err = run(capsys, fake, "trace", "-j", "-c", "2", "icmp", "and", "host", "10.0.0.2")
    assert code == 0, err
    flags = fake.programs[0].cflags
    assert any(f.startswith("-DTRACE_FILTER_ETH={") for f in flags)
    assert any(f.startswith("-DTRACE_FILTER_RAW={") for f in flags)
    assert "-DSTREAM" in flags
    first, second = (json.loads(line) for line in out.splitlines())
    assert first["summary"].endswith("seq 1, 84 bytes") and first["end"] == "dropped"
    assert first["drop_reason"] == "NETFILTER_DROP"
    assert [h["hook"] for h in first["hops"]] == ["queue", "receive", "drop"]
    assert second["end"] == "freed" and second["hops"][-1]["hook"] == "consume"


def test_text_output_and_count(fake, capsys):
    code, out, err = run(capsys, fake, "trace", "-c", "1", "icmp")
    assert code == 0
    assert out.splitlines()[0] == "#1 10.0.0.1 > 10.0.0.2 ICMP echo request id 7 seq 1, 84 bytes"
    assert "DROPPED: NETFILTER_DROP" in out and "#2" not in out
    assert err.splitlines()[-1] == "1 packets"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("ip6 protochain 6", "jumps backward"),
        ("host nosuchhost.invalid", "filter 'host nosuchhost.invalid'"),
        ("tcp and (", "syntax error"),
        ("", "an empty filter would trace every packet"),
    ],
)
def test_an_unsupported_filter_is_one_line_and_exit_2(fake, capsys, expression, message):
    code, out, err = run(capsys, fake, "trace", expression)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("pyprobe: error: ") and message in err
    assert fake.programs == []  # refused before anything was loaded


def test_trace_is_not_the_exporters_nor_a_counting_command(capsys):
    assert "trace" not in default().names()
    code, out, _ = run(capsys, FakeLoader(), "trace", "--help")
    assert code == 0 and "pcap-filter expression" in out


def test_pcap_file_has_each_packet_once_with_how_it_ended(fake, capsys, tmp_path):
    path = tmp_path / "t.pcapng"
    code, _, err = run(capsys, fake, "trace", "-c", "2", "-w", str(path), "icmp")
    assert code == 0, err
    linktype, packets = read_with_libpcap(path)
    assert linktype == 1  # Ethernet: the first interface
    assert packets == [(icmp_echo(1), 98), (icmp_echo(2), 98)]
    raw = path.read_bytes()
    assert b"pyprobe trace: DROPPED: NETFILTER_DROP" in raw  # the first packet's comment
    assert raw.count(b"pyprobe trace: freed") == 1


def test_pcap_file_that_cannot_be_written_is_one_line(fake, capsys, tmp_path):
    code, _, err = run(capsys, fake, "trace", "-w", str(tmp_path / "no" / "x.pcapng"), "icmp")
    assert code == 2 and err.count("\n") == 1 and "No such file or directory" in err


def test_a_packet_without_a_link_layer_header_gets_a_made_up_one(tmp_path):
    path = tmp_path / "raw.pcapng"
    ip = icmp_echo(4)[14:]
    with path.open("wb") as f:
        w = pcapng.Writer(f)
        w.packet(1_700_000_000_123_456_789, ip, len(ip), False, "pyprobe trace: freed")
    linktype, packets = read_with_libpcap(path)
    assert linktype == 1
    assert packets == [(bytes(12) + b"\x08\x00" + ip, len(ip) + 14)]
    assert b"this Ethernet header is made up" in path.read_bytes()


# -- pyprobe why's verdict ------------------------------------------------------------


def tcp_packet(pkt, flags, src, sport, dst, dport, end, **end_fields):
    ip = bytes([0x45, 0, 0, 40]) + bytes(5) + b"\x06" + bytes(2)
    ip += bytes(map(int, src.split("."))) + bytes(map(int, dst.split(".")))
    bits = sum(1 << "FSRPAUEC".index(c) for c in flags)
    raw = bytes(12) + b"\x08\x00" + ip + struct.pack("!HHIIBB", sport, dport, 1, 0, 0x50, bits)
    first = decoded({"pkt": pkt, "ts_ns": 1, "flags": F_FIRST | F_ETHERNET, "data": raw,
                     "caplen": len(raw), "wirelen": len(raw), "netns_name": "h1",
                     "device": "eth0"})  # fmt: skip
    last = decoded({"pkt": pkt, "ts_ns": 2, "hook": end, "netns_name": "h2", "device": "eth0",
                    **end_fields})  # fmt: skip
    p = view.Packet(pkt)
    p.hops = [first, last]
    return p


def test_why_ranks_a_drop_first_and_names_who_dropped():
    syns = [
        tcp_packet(i, "S", "10.0.0.1", 40000 + i, "10.0.0.2", 80, "drop",
                   drop_reason="NETFILTER_DROP", location="nft_do_chain+0x46f")
        for i in range(3)
    ]  # fmt: skip
    attempts = [why.Attempt("timeout", 1000.0)] * 3
    found = why.causes("10.0.0.2:80", attempts, syns)
    assert [c.text for c in found] == [
        "dropped by netfilter (a firewall rule) in netns h2 on eth0: NETFILTER_DROP at "
        "nft_do_chain (3 packets)"
    ]


def test_why_a_refusal_is_one_cause_with_the_resetting_namespace():
    syn = tcp_packet(1, "S", "10.0.0.1", 40000, "10.0.0.2", 80, "drop",
                     drop_reason="NO_SOCKET", location="tcp_v4_rcv+0x10")  # fmt: skip
    rst = tcp_packet(2, "RA", "10.0.0.2", 80, "10.0.0.1", 40000, "consume", location="x")
    found = why.causes("10.0.0.2:80", [why.Attempt("refused", 0.1)], [syn, rst])
    assert [c.text for c in found] == [
        "connect refused: no listener on 10.0.0.2:80 (a TCP reset back, sent in netns h1 on "
        "eth0; 1 of 1 attempts)"
    ]


def test_why_reports_no_answer_where_nothing_was_dropped():
    syn = tcp_packet(1, "S", "10.0.0.1", 40000, "10.0.0.2", 80, "xmit")
    found = why.causes("10.0.0.2:80", [why.Attempt("timeout", 2000.0)], [syn])
    assert found[0].text == (
        "no answer from 10.0.0.2:80: 1 of 1 attempts timed out and no drop was traced on this "
        "host; the SYN was last seen transmitted in netns h2 on eth0"
    )
    lines = why.report("10.0.0.2:80", [why.Attempt("timeout", 2000.0)], [syn])
    assert lines[0] == "why 10.0.0.2:80:" and lines[-1].startswith("  (evidence: 1 attempts")


@pytest.mark.parametrize(
    ("target", "message"),
    [("10.0.0.2", "expected HOST:PORT"), ("10.0.0.2:0", "expected HOST:PORT"),
     ("nosuchhost.invalid:80", "nosuchhost.invalid: ")],
)  # fmt: skip
def test_why_bad_target_is_one_line_exit_2(fake, capsys, target, message):
    code, out, err = run(capsys, fake, "why", target)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err


def test_compile_refuses_an_on_demand_probe_in_one_line(capsys):
    code, out, err = run(capsys, FakeLoader(), "compile", "--probe", "trace")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "trace: compiled by its own command" in err


def icmp_unreachable(pkt, code, inner_src, sport, inner_dst, dport):
    """An ICMP destination unreachable from inner_dst quoting a UDP datagram."""

    def ip(proto, src, dst):
        return (bytes([0x45, 0, 0, 56]) + bytes(5) + bytes([proto]) + bytes(2)
                + bytes(map(int, src.split("."))) + bytes(map(int, dst.split("."))))  # fmt: skip

    quoted = ip(17, inner_src, inner_dst) + struct.pack("!HHHH", sport, dport, 20, 0)
    raw = bytes(12) + b"\x08\x00" + ip(1, inner_dst, inner_src) + bytes([3, code]) + bytes(6)
    raw += quoted
    first = decoded({"pkt": pkt, "ts_ns": 5, "flags": F_FIRST | F_ETHERNET, "data": raw,
                     "caplen": len(raw), "wirelen": len(raw)})  # fmt: skip
    p = view.Packet(pkt)
    p.hops = [first]
    return p


def test_why_watch_reads_each_clients_outcome_from_what_came_back():
    """SYN then SYN-ACK: connected; SYN then RST: refused; a SYN and nothing
    (its retransmit is the same client): timeout; a server's packet to a
    client never seen starting is nobody's attempt."""
    s, d = "10.0.0.1", "10.0.0.2"
    packets = [
        tcp_packet(1, "S", s, 40001, d, 80, "xmit"),
        tcp_packet(2, "SA", d, 80, s, 40001, "xmit"),
        tcp_packet(3, "S", s, 40002, d, 80, "xmit"),
        tcp_packet(4, "RA", d, 80, s, 40002, "xmit"),
        tcp_packet(5, "S", s, 40003, d, 80, "xmit"),
        tcp_packet(6, "S", s, 40003, d, 80, "xmit"),
        tcp_packet(7, "A", d, 80, s, 40009, "xmit"),
        tcp_packet(8, "S", s, 40004, d, 81, "xmit"),  # another port: not its
    ]
    got = [a.outcome for a in why.observed(packets, d, 80)]
    assert got == ["connected", "refused", "timeout"]


def test_why_watch_an_icmp_error_quoting_a_datagram_ends_it():
    s, d = "10.0.0.1", "10.0.0.2"

    def datagram(pkt, sport, src=s, dst=d, sp=None, dp=53):
        p = tcp_packet(pkt, "", src, sp or sport, dst, dp, "xmit")
        raw = bytearray(p.hops[0]["data"])
        raw[14 + 9] = 17  # UDP
        p.hops[0]["data"] = bytes(raw)
        return p

    packets = [
        datagram(1, 5001),
        icmp_unreachable(2, 3, s, 5001, d, 53),  # port unreachable: refused
        datagram(3, 5002),
        icmp_unreachable(4, 1, s, 5002, d, 53),  # host unreachable
        datagram(5, 5003),
        datagram(6, 0, src=d, dst=s, sp=53, dp=5003),  # an answer
        datagram(7, 5004),
    ]
    got = [a.outcome for a in why.observed(packets, d, 53, udp=True)]
    assert got == ["refused", "unreachable", "answered", "timeout"]
