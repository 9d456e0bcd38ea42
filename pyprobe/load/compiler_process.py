"""A compiler process: `python -m pyprobe.load.compiler_process FD PARENT`.

Started by load/compilers.py as a fresh interpreter (never a bare fork of a
process with threads). It loads what its parent asks over the socket at FD
(a LoadRequest and the program cache's key), attaches it, and sends back the
description and the descriptors (SCM_RIGHTS), until the socket closes.

It ends by itself when its parent is gone, by three ways, any one enough:
the socket's other end closes (EOF), the kernel's parent-death signal, and
a look at its parent every second (the death signal follows the thread
that started the child, not the process: a thread that ended would fire
it, a parent that forked would not be seen).
"""

from __future__ import annotations

import ctypes
import os
import pickle
import select
import signal
import socket
import sys
from collections.abc import Sequence

from ..errors import PyprobeError
from . import cache
from .bcc import BccLoader, BccProgram
from .program import Exported

MAX_FDS = 250  # SCM_MAX_FD is 253
MAX_MESSAGE = 1 << 20
_PR_SET_PDEATHSIG = 1
WATCH_S = 1.0  # how often the parent is looked for, when no request comes


def serve(sock: socket.socket, parent: int) -> None:
    """Load what is asked, send back descriptions and fds, until EOF or the
    parent is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the parent's to handle
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    kept: list[BccProgram] = []  # never cleaned up: what they hold is the parent's now
    loader = BccLoader()
    while os.getppid() == parent:
        if not select.select([sock], [], [], WATCH_S)[0]:
            continue
        data = sock.recv(MAX_MESSAGE)
        if not data:
            return
        request, entry = pickle.loads(data)  # from our own parent
        reply: Exported | str
        fds: Sequence[int] = []
        try:
            program = loader.load(request)
            kept.append(program)
            reply, fds = program.export(request.exports)
            cache.save(entry, reply, program.map_names(), program.instructions)
        except PyprobeError as e:
            reply = str(e)
        except Exception as e:
            reply = f"{request.source.name}: {type(e).__name__}: {e}"
        socket.send_fds(sock, [pickle.dumps(reply)], list(fds))


def main(argv: list[str]) -> None:
    code = 1
    try:
        fd, parent = int(argv[0]), int(argv[1])
        serve(socket.socket(fileno=fd), parent)
        code = 0
    except BaseException as e:
        os.write(2, f"pyprobe: compiler process: {type(e).__name__}: {e}\n".encode())
    finally:
        # No clean-up: bcc's atexit handler would disable the perf events the
        # parent now holds (load/compilers.py).
        os._exit(code)


if __name__ == "__main__":
    main(sys.argv[1:])
