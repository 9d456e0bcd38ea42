"""--drop-privileges: once the programs are loaded and attached, the daemon
needs no capability to serve them. Their maps are read through descriptors
it already holds (the bpf() checks were made when they were created), and
the BPF stats descriptor stays open. So it becomes an ordinary user, with no
capabilities left (CapEff 0), before it answers its first scrape.

What it gives up: entering other network namespaces (their sockets, qdiscs
and new devices' names; namespaces known at start keep their names), and
seeing the owners of other users' sockets."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass

from ..errors import PyprobeError


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


def lookup(name: str) -> User:
    try:
        entry = pwd.getpwnam(name) if not name.isdigit() else pwd.getpwuid(int(name))
    except KeyError:
        raise PyprobeError(f"--drop-privileges: no user {name!r} on this system") from None
    if entry.pw_uid == 0:
        raise PyprobeError(f"--drop-privileges: {name!r} is root; name an unprivileged user")
    return User(entry.pw_name, entry.pw_uid, entry.pw_gid)


def drop(user: User) -> None:
    """Become user for good: groups, gid, then uid. Leaving uid 0 clears the
    permitted and effective capability sets (no SECBIT_KEEP_CAPS)."""
    try:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)
    except OSError as e:
        raise PyprobeError(f"--drop-privileges: cannot become {user.name}: {e.strerror}") from None
    if effective_capabilities() != 0:
        raise PyprobeError(f"--drop-privileges: still holding capabilities as {user.name}")


def effective_capabilities(pid: str = "self") -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return -1
