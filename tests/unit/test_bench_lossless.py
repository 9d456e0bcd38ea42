"""The lossless search's count of printed events (bench/lossless.py): the
headline figure of the bench rests on it, so it is checked here against a
log written the way a tool writes one, lines cut anywhere."""

from __future__ import annotations

from pathlib import Path

from bench import lossless


def test_counts_complete_event_lines_across_partial_writes_and_emptying(tmp_path: Path) -> None:
    log = tmp_path / "tool.log"
    log.write_bytes(b"")
    out = lossless.Output(log, lossless.pyprobe_event)
    with open(log, "ab") as tool:  # O_APPEND, as search() opens it
        tool.write(b'Tracing... Ctrl-C to end.\n{"a":1}\n{"a"')
        tool.flush()
        assert out.new_events() == 1  # the header is no event; the cut line waits
        tool.write(b':2}\n{"a":3}\n')
        tool.flush()
        assert out.new_events() == 2
        out.empty()
        assert log.stat().st_size == 0
        tool.write(b'{"a":4}\n')  # appended at the new end, not at the old offset
        tool.flush()
        assert out.new_events() == 1
        tool.write(b'{"a":5')
        tool.flush()
        assert out.new_events() == 0
        out.empty()  # a line still open: kept, or its start would be lost
        assert log.stat().st_size > 0
        tool.write(b"}\n")
        tool.flush()
        assert out.new_events() == 1


def test_bcc_lines_are_events_by_their_socket_address() -> None:
    assert lossless.bcc_event(
        "ffff8881677fca00 18389 churn 127.0.0.1 0 127.0.0.1 18080 CLOSE -> SYN_SENT 0.000"
    )
    assert not lossless.bcc_event("SKADDR           C-PID C-COMM     LADDR")
