"""tc classifiers for the lab's impairments (--loss, the firewall workload):
compiled once, then loaded from the program cache with bpf() alone."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from ..kernel import programs
from . import bcc, cache
from .program import program_text


@contextlib.contextmanager
def tc_program(source: Path, function: str, cflags: list[str]) -> Iterator[tuple[int, str]]:
    """A loaded tc classifier: (fd, name) while the block runs. Attach it
    (e.g. a cls_bpf filter through pyroute2) inside the block; the filter then
    holds the program, which outlives this process until its device goes.

    Kept in the program cache once compiled (~1.3 s of clang here, for a
    dozen instructions): the next `lab up --loss` or firewall loads them."""
    entry = cache.classifier_key(program_text(source), function, cflags)
    fd = cache.load_classifier(entry, function)
    if fd is None:
        insns = bcc.compile_classifier(source, function, cflags)
        cache.save_classifier(entry, function, insns)
        fd = programs.load_sched_cls(insns, function)
    try:
        yield fd, function
    finally:
        os.close(fd)
