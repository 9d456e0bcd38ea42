"""The CLI over a fake loader: rendering, NDJSON, filters as cflags, one-line errors."""

import json
import re
import socket

import pytest
from fakes import FakeLoader, fake_env

from pyprobe import cli
from pyprobe.cli.common import Context
from pyprobe.core.events import header
from pyprobe.probes import default

TcpStateEvent = header().layout("tcpstate_event").ctype
F_OWNER_KNOWN = header().constant("F_OWNER_KNOWN")
F_DELTA_KNOWN = header().constant("F_DELTA_KNOWN")
registry = default()
CONTEXT = [Context(env=fake_env)]  # what run() runs the CLI with: the fixture's fake


def event(
    old,
    new,
    sport,
    dport,
    pid=42,
    comm=b"curl",
    flags=F_OWNER_KNOWN | F_DELTA_KNOWN,
    delta_ns=1_500_000,
    family=socket.AF_INET,
    netns=4026531840,
):
    ev = TcpStateEvent(
        ts_ns=10**9,
        skaddr=0xFFFF888012345678,
        delta_ns=delta_ns,
        pid=pid,
        netns=netns,
        sport=sport,
        dport=dport,
        family=family,
        oldstate=old,
        newstate=new,
        flags=flags,
        comm=comm,
    )
    if family == socket.AF_INET:
        ev.saddr[:4] = [10, 0, 0, 1]
        ev.daddr[:4] = [10, 0, 0, 2]
    else:
        ev.saddr[15] = ev.daddr[15] = 1
    return bytes(ev)


@pytest.fixture
def fake(monkeypatch):
    loader = FakeLoader(
        maps={"transitions": {7 * 16 + 2: 5, 2 * 16 + 1: 4, 2 * 16 + 7: 1}, "lost": {0: 0}},
        events=[
            event(7, 2, 0, 80, flags=F_OWNER_KNOWN, delta_ns=0),
            event(2, 1, 5555, 80),
            event(3, 1, 80, 5555, pid=7, comm=b"ksoftirqd/0", flags=F_DELTA_KNOWN),
            event(7, 2, 0, 443, family=socket.AF_INET6, flags=F_OWNER_KNOWN),
        ],
    )
    CONTEXT[0] = Context(env=fake_env, loader=lambda: loader)
    return loader


def run(capsys, *argv, context=None):
    with pytest.raises(SystemExit) as e:
        cli.main(list(argv), context=context or CONTEXT[0])
        raise SystemExit(0)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_stream_ndjson(fake, capsys):
    code, out, err = run(capsys, "tcpstates", "-j", "-d", "0.05")
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [(r["oldstate"], r["newstate"]) for r in records] == [
        ("CLOSE", "SYN_SENT"),
        ("SYN_SENT", "ESTABLISHED"),
        ("SYN_RECV", "ESTABLISHED"),
        ("CLOSE", "SYN_SENT"),
    ]
    first, second, third, v6 = records
    assert first["ms"] is None and second["ms"] == 1.5
    assert second["saddr"] == "10.0.0.1" and second["sport"] == 5555 and second["dport"] == 80
    assert third["owner_known"] is False and second["owner_known"] is True
    assert v6["family"] == "IPv6" and v6["daddr"] == "::1"
    assert first["skaddr"] == "0xffff888012345678" and first["netns"] == 4026531840
    assert "Tracing TCP state changes via tp_btf:inet_sock_set_state" in err
    assert "lost events: 0" in err
    assert fake.programs[0].closed  # detached on the way out
    assert "-DSTREAM" in fake.programs[0].cflags


def test_stream_text_marks_guessed_owner(fake, capsys):
    code, out, _ = run(capsys, "tcpstates", "-T", "-d", "0.05")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("TIME     SKADDR")
    assert "SYN_SENT -> ESTABLISHED" in lines[2] and "1.500" in lines[2] and "curl " in lines[2]
    assert "ksoftirqd/0*" in lines[3]  # softirq context, owner not yet seen
    assert "[::1]:443" in lines[4]


def test_filters_compile_into_the_program(fake, capsys):
    code, _, _ = run(
        capsys, "tcpstates", "-p", "42", "-L", "80,443", "-D", "22", "-4", "-d", "0.01"
    )
    flags = fake.programs[0].cflags
    assert code == 0
    assert "-DFILTER_PID=42" in flags
    assert "-DFILTER_FAMILY=2" in flags
    assert "-DLPORT_MATCH(p)=((p)==80||(p)==443)" in flags
    assert "-DDPORT_MATCH(p)=((p)==22)" in flags


def test_summary_table(fake, capsys, monkeypatch):
    monkeypatch.setattr(
        "pyprobe.probes.tcpstates.TcpStates.live_sockets",
        staticmethod(lambda netns=None: {4026531840: {"LISTEN": 2, "TIME_WAIT": 3}}),
    )
    code, out, _ = run(capsys, "tcpstates", "--summary", "--format", "table", "0.01", "1")
    assert code == 0
    assert re.search(r"│ CLOSE +│ SYN_SENT +│ +5 │ +5 │", out)
    assert re.search(r"│ SYN_SENT +│ CLOSE +│ +1 │ +1 │", out)
    assert re.search(r"NETNS +┃ TIME_WAIT +┃ LISTEN +┃ TOTAL", out)
    assert re.search(r"│ 4026531840 │ +3 │ +2 │ +5 │", out)
    assert "-DSTREAM" not in fake.programs[0].cflags  # counters only: the cheap program


def test_summary_piped_is_plain_columns(fake, capsys, monkeypatch):
    """Not a terminal: no box drawing, a header line and a line per row with
    as many fields as the header (awk-able); --format plain says the same."""
    monkeypatch.setattr(
        "pyprobe.probes.tcpstates.TcpStates.live_sockets",
        staticmethod(lambda netns=None: {4026531840: {"LISTEN": 2, "TIME_WAIT": 3}}),
    )
    for extra in ([], ["--format", "plain"]):
        code, out, _ = run(capsys, "tcpstates", "--summary", *extra, "0.01", "1")
        assert code == 0
        assert not re.search("[│┃━─]", out)
        lines = out.splitlines()
        header = lines.index("OLDSTATE  NEWSTATE     COUNT  TOTAL")
        assert lines[header + 1].split() == ["CLOSE", "SYN_SENT", "5", "5"]
        assert "NETNS       TIME_WAIT  LISTEN  TOTAL" in lines
        assert "4026531840          3       2      5" in lines


@pytest.mark.parametrize("flag", [["-j"], ["--json"], ["--format", "json"]])
def test_counts_json_by_format_or_its_alias(fake, capsys, flag):
    code, out, _ = run(capsys, "tcpstates", "--summary", *flag, "0.01", "1")
    assert code == 0
    (report,) = [json.loads(line) for line in out.splitlines()]
    assert report


def test_probe_command_formats(fake, capsys):
    """A command made from a manifest (softirqs: kernel counters) takes
    --format too; a table only where asked for."""
    code, out, _ = run(capsys, "softirqs", "--format", "plain", "0.01", "1")
    assert code == 0 and not re.search("[│┃]", out)
    code, boxed, _ = run(capsys, "softirqs", "--format", "table", "0.01", "1")
    assert code == 0 and re.search("[│┃]", boxed)
    code, _, err = run(capsys, "softirqs", "--format", "csv")
    assert code == 2 and "'csv' is not one of 'table', 'plain', 'json'" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["tcpstates", "-L", "80,x"], "bad port 'x' in '80,x'"),
        (["tcpstates", "-D", "0"], "bad port '0'"),
        (["tcpstates", "-p", "-3"], "Invalid value for '-p'"),
        (
            ["tcpstates", "--summary", "-p", "3"],
            "-p/-L/-D/-4/-6/--cgroup/--container filter the stream",
        ),
        (["tcpstates", "5"], "INTERVAL/COUNT go with --summary"),
        (["tcpstates", "--summary", "0"], "Invalid value for '[INTERVAL]'"),
        (["tcpstates", "--netns", "no-such-ns"], "unknown network namespace 'no-such-ns'"),
        (["nope"], "No such command 'nope'"),
    ],
)
def test_bad_input_is_one_line_exit_2(fake, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("pyprobe: error: ")
    assert message in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["lab", "up", "bridge"], "(see pyprobe lab up --help)"),
        (["tcpstates", "-L", "x"], "(see pyprobe tcpstates --help)"),
        (["lab", "nope"], "(see pyprobe lab --help)"),
        (["--bogus"], "(see pyprobe --help)"),
    ],
)
def test_a_usage_error_points_at_the_refusing_commands_help(fake, capsys, argv, hint):
    code, _, err = run(capsys, *argv)
    assert code == 2 and err.rstrip().endswith(hint)


def test_list_one_line_per_probe(fake, capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    body, _, footnote = out.partition("\n\ncosts ")  # the last bench's costs, when one ran
    assert body.splitlines() == [line for line in body.splitlines() if line]
    assert not footnote or footnote.startswith("measured ")
    lines = {line.split()[0]: line for line in body.splitlines() if line[:1].isalpha()}
    assert set(lines) == set(registry.names())
    features = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    assert "netdev.sizes" in features and "softirqs.time" in features
    assert lines["netdev"].split()[1:3] == ["kernel", "counters"]
    assert lines["tcpstates"].split()[1] == "tp_btf:inet_sock_set_state"
    # the summaries start in one column, however long a probe's hook label
    starts = {line.index(registry.create(n).manifest.summary) for n, line in lines.items()}
    assert len(starts) == 1
