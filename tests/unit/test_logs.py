"""The daemon's log lines: logfmt and JSON as Prometheus' exporters write
them, read back by a strict logfmt reader; the levels, the zone, the flags,
and the exporter's own log calls."""

from __future__ import annotations

import inspect
import io
import json
import logging
import re
import sys
import time

import pytest
from fakes import fake_env
from hypothesis import given
from hypothesis import strategies as st

from pyprobe import cli, logs
from pyprobe.cli.common import Context
from pyprobe.errors import PyprobeError
from pyprobe.exporter import daemon

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def read_logfmt(line: str) -> dict[str, str]:
    """A strict logfmt reader: key=bare or key="quoted with \\ escapes",
    one space between pairs, no key twice."""
    out: dict[str, str] = {}
    i, n = 0, len(line)
    escapes = {"n": "\n", "r": "\r", "t": "\t", '"': '"', "\\": "\\"}
    while i < n:
        eq = line.index("=", i)
        key, i = line[i:eq], eq + 1
        assert key and not any(c in ' "' for c in key), (key, line)
        if line.startswith('"', i):
            i += 1
            value = []
            while line[i] != '"':
                if line[i] == "\\":
                    c = line[i + 1]
                    if c in "uU":
                        width = 4 if c == "u" else 8
                        value.append(chr(int(line[i + 2 : i + 2 + width], 16)))
                        i += 2 + width
                    else:
                        value.append(escapes[c])  # any other escape is an error
                        i += 2
                else:
                    value.append(line[i])
                    i += 1
            i += 1
            text = "".join(value)
        else:
            end = line.find(" ", i)
            end = n if end < 0 else end
            text, i = line[i:end], end
            assert '"' not in text and "=" not in text, (text, line)
        assert key not in out, (key, line)
        out[key] = text
        if i < n:
            assert line[i] == " " and line[i + 1 : i + 2] != " ", line
            i += 1
    return out


def record(msg: str = "m", level: int = logging.INFO, **fields: object) -> logging.LogRecord:
    r = logging.LogRecord("pyprobe.exporter", level, "/x/daemon.py", 148, msg, (), None)
    r.created, r.msecs = 1796573297.123, 123.0
    r.fields = fields
    return r


def logfmt(**fields: object) -> str:
    return logs.LogfmtFormatter().format(record(**fields))


@pytest.fixture
def root_logging():
    """setup() configures the root logger: put it back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("drops", "drops"),
        ("tp_btf:kfree_skb", "tp_btf:kfree_skb"),
        ("two words", '"two words"'),
        ('say "hi"', r'"say \"hi\""'),
        ("C:\\dir", r'"C:\\dir"'),  # bare, a reader that unescapes would eat it
        ("line1\nline2", r'"line1\nline2"'),
        ("a\r\tb", r'"a\r\tb"'),
        ("a=b", '"a=b"'),
        ("", '""'),
        ("\x00\x1b\x7f", r'"\u0000\u001b\u007f"'),
        ("\u2028", r'"\u2028"'),  # a line separator to some readers
        ("café", "café"),
        (None, "null"),
        (True, "true"),
        (3, "3"),
        (1.5, "1.5"),
        (OSError(2, "No such file"), '"[Errno 2] No such file"'),
    ],
)
def test_logfmt_values_are_quoted_and_escaped_only_when_needed(value, written):
    assert logs.logfmt_value(value) == written


def test_the_reported_verifier_error_is_one_line_that_reads_back():
    error = 'verifier: R1 "invalid mem access"\nline2'
    line = logfmt(probe="drops", error=error)
    assert "\n" not in line
    assert read_logfmt(line)["error"] == error


@given(st.text())
def test_any_text_reads_back_as_it_was(text):
    line = logfmt(value=text)
    assert "\n" not in line and "\r" not in line
    assert read_logfmt(line)["value"] == text


def test_a_logfmt_line_has_ts_caller_level_msg_then_the_fields_in_order():
    line = logfmt(msg="probe attached", probe="drops", hook="tp_btf", n=3)
    assert line == (
        "ts=2026-12-06T16:08:17.123Z caller=daemon.py:148 level=info "
        'msg="probe attached" probe=drops hook=tp_btf n=3'
    )


def test_a_field_named_like_a_core_key_does_not_replace_it():
    clash = record("real")
    clash.fields = {"msg": "fake", "ts": "then", "level": "x"}
    fields = read_logfmt(logs.LogfmtFormatter().format(clash))
    assert fields["msg"] == "real" and fields["level"] == "info"
    assert (fields["_msg"], fields["_ts"], fields["_level"]) == ("fake", "then", "x")


@pytest.mark.parametrize(
    ("level", "name"),
    [
        (logging.DEBUG, "debug"),
        (logging.INFO, "info"),
        (logging.WARNING, "warn"),
        (logging.ERROR, "error"),
        (logging.CRITICAL, "error"),
    ],
)
def test_levels_are_gos_lower_case_names(level, name):
    assert read_logfmt(logs.LogfmtFormatter().format(record(level=level)))["level"] == name
    assert json.loads(logs.JSONFormatter().format(record(level=level)))["level"] == name


def test_time_is_utc_with_milliseconds_whatever_the_local_zone(monkeypatch):
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        ts = read_logfmt(logfmt())["ts"]
    finally:
        monkeypatch.undo()  # TZ as it was, then the C library told
        time.tzset()
    assert ts == "2026-12-06T16:08:17.123Z" and TS.match(ts)
    assert logs.timestamp(1796573297.9999) == "2026-12-06T16:08:17.999Z"  # truncated, as Go's


def test_json_lines_are_valid_json_with_the_same_fields():
    error = 'verifier: R1 "invalid mem access"\nline2'
    line = logs.JSONFormatter().format(
        record(
            "probe not attached",
            level=logging.WARNING,
            probe="drops",
            error=error,
            n=3,
            ok=False,
            none=None,
            nan=float("nan"),
            exc=OSError("boom"),
            name="bad\udcff",
        )
    )
    assert "\n" not in line and line.isascii()
    obj = json.loads(line)
    assert obj == {
        "ts": "2026-12-06T16:08:17.123Z",
        "caller": "daemon.py:148",
        "level": "warn",
        "msg": "probe not attached",
        "probe": "drops",
        "error": error,
        "n": 3,
        "ok": False,
        "none": None,
        "nan": "nan",
        "exc": "boom",
        "name": "bad\udcff",
    }


def test_an_exception_is_one_field_of_one_line():
    try:
        raise ValueError('bad "thing"')
    except ValueError:
        r = logging.LogRecord("x", logging.ERROR, "/x/y.py", 1, "failed", (), sys.exc_info())
    fields = read_logfmt(logs.LogfmtFormatter().format(r))
    assert fields["msg"] == "failed" and 'ValueError: bad "thing"' in fields["exc"]


def test_setup_levels_formats_and_caller(root_logging):
    out = io.StringIO()
    logs.setup("warn", "logfmt", out)
    log = logging.getLogger("pyprobe.test")
    log.info("hidden")
    here = inspect.stack()[0].lineno + 1
    log.warning("shown", extra=logs.kv(probe="drops"))
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    fields = read_logfmt(lines[0])
    assert fields["level"] == "warn" and fields["msg"] == "shown" and fields["probe"] == "drops"
    assert fields["caller"] == f"test_logs.py:{here}"
    # set up again: replaced, not a second handler writing every line twice
    again = io.StringIO()
    logs.setup("debug", "json", again)
    log.debug("now", extra=logs.kv(n=1))
    assert out.getvalue().count("\n") == 1
    assert json.loads(again.getvalue())["n"] == 1


def test_setup_refuses_what_it_does_not_know(root_logging):
    with pytest.raises(PyprobeError, match=r"bad --log\.level 'warning'"):
        logs.setup("warning")
    with pytest.raises(PyprobeError, match=r"bad --log\.format 'yaml'"):
        logs.setup("info", "yaml")


def test_export_flags_reach_the_logs(root_logging, monkeypatch, capsys):
    def fake_run(opts, env, registry, loader):
        logging.getLogger("pyprobe.exporter").info("ran", extra=logs.kv(address=opts.address))
        logging.getLogger("pyprobe.exporter").debug("hidden")

    monkeypatch.setattr("pyprobe.cli.export.run", fake_run)
    with pytest.raises(SystemExit) as e:
        cli.main(["export", "--log.format", "json", "--log.level", "info"], Context(env=fake_env))
        raise SystemExit(0)
    assert e.value.code == 0
    lines = capsys.readouterr().err.splitlines()
    assert [json.loads(line)["address"] for line in lines] == ["127.0.0.1:9977"]
    for bad in (["--log.format", "yaml"], ["--log.level", "warning"]):
        with pytest.raises(SystemExit) as e:
            cli.main(["export", *bad], Context(env=fake_env))
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.splitlines()) == 1 and bad[1] in err, err


def test_the_daemon_logs_a_failed_reload_as_one_line_with_the_error_as_it_was(
    root_logging, tmp_path
):
    out = io.StringIO()
    logs.setup("info", "logfmt", out)
    config = tmp_path / "web.yml"
    config.write_text('tls_server_config:\n  "bad \\"key\\"": 1\n')

    class Server:
        config = None

    state = {"ok": True, "at": 0.0}
    daemon._reload(Server(), str(config), state)  # type: ignore[arg-type]
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and state["ok"] is False
    fields = read_logfmt(lines[0])
    assert fields["level"] == "error"
    assert fields["msg"] == "config reload failed, keeping the old one"
    assert fields["error"] == f'{config}: tls_server_config.bad "key": unknown key'
