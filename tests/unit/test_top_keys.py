"""`pyprobe top`'s keys: q quits at once; no key, or stdin at its end,
waits out the interval (no busy loop); not a terminal, no cbreak."""

from __future__ import annotations

import io
import os
import time

from pyprobe.views.top import keypresses, quit_pressed


def timed(fd, timeout):
    t = time.monotonic()
    result = quit_pressed(fd, timeout)
    return result, time.monotonic() - t


def test_q_quits_at_once_and_other_keys_do_not():
    r, w = os.pipe()
    try:
        os.write(w, b"x")
        assert timed(r, 0.2)[0] is False  # read, ignored, the interval waited out
        os.write(w, b"aq")
        quit_, took = timed(r, 5)
        assert quit_ is True and took < 1
    finally:
        os.close(r)
        os.close(w)


def test_no_key_waits_the_interval():
    r, w = os.pipe()
    try:
        quit_, took = timed(r, 0.2)
        assert quit_ is False and 0.19 <= took < 1
    finally:
        os.close(r)
        os.close(w)


def test_end_of_input_waits_the_interval_instead_of_spinning():
    r, w = os.pipe()
    os.close(w)
    try:
        cpu = time.process_time()
        quit_, took = timed(r, 0.3)
        assert quit_ is False and 0.29 <= took < 1
        assert time.process_time() - cpu < 0.1
    finally:
        os.close(r)


def test_no_terminal_no_keys():
    with keypresses(io.StringIO()) as fd:
        assert fd is None
    r, w = os.pipe()
    try:
        with keypresses(os.fdopen(r, closefd=False)) as fd:
            assert fd is None  # a pipe is not a terminal: left as it is
    finally:
        os.close(r)
        os.close(w)
    assert timed(None, 0.1)[1] >= 0.09
