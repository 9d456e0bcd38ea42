"""The suites' waits on a child's pipe end: a child that goes quiet fails the
test within the bound, killed, instead of blocking the run (the Vagrant box's
`make test` sat for over 10 minutes on such a read under TCG)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.support import first_line, lines_until

QUIET = [sys.executable, "-c", "import sys, time; print('one', flush=True); time.sleep(60)"]


def child() -> subprocess.Popen:
    return subprocess.Popen(QUIET, stdout=subprocess.PIPE, text=True)


def test_a_line_that_comes_is_returned():
    proc = child()
    try:
        assert first_line(proc, proc.stdout, within=30) == "one\n"
    finally:
        proc.kill()
        proc.wait(5)


def test_a_line_that_never_comes_fails_within_the_bound_and_the_child_is_killed():
    proc = child()
    start = time.monotonic()
    with pytest.raises(AssertionError, match=r"no ready from .* within 1s \(killed it") as e:
        lines_until(proc, proc.stdout, lambda line: line == "ready\n", within=1, what="ready")
    assert time.monotonic() - start < 5
    assert "one" in str(e.value)  # what it did say, for the failure's reader
    assert proc.wait(5) == -9


def test_the_end_of_the_pipe_ends_the_wait():
    proc = subprocess.Popen([sys.executable, "-c", "pass"], stdout=subprocess.PIPE, text=True)
    assert first_line(proc, proc.stdout, within=30) == ""
    proc.wait(5)
