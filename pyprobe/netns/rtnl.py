"""pyroute2, imported when first used: importing it costs 0.1-0.23 s here,
which every command's start would pay, and most commands never touch
netlink through it (link names and sock_diag are read without it). The
one place pyroute2 is imported; the rest of pyprobe asks here."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


def module(name: str = "pyroute2") -> ModuleType:
    """pyroute2 or one of its modules (pyroute2.netns, pyroute2.ethtool...)."""
    return importlib.import_module(name)


def iproute(**kwargs: Any) -> Any:
    """An IPRoute (rtnetlink) socket in the calling thread's namespace."""
    return module().IPRoute(**kwargs)


def setns(fd: int) -> None:
    """Move the calling thread into the network namespace open at fd."""
    module("pyroute2.netns").setns(fd, flags=0)


def create_netns(name: str) -> None:
    """A new named namespace (/run/netns/NAME), as `ip netns add` makes it."""
    module("pyroute2.netns").create(name)


def remove_netns(name: str) -> None:
    module("pyroute2.netns").remove(name)


def ethtool() -> Any:
    """An ethtool (features) socket in the calling thread's namespace."""
    return module("pyroute2.ethtool").Ethtool()


def tc_rate(rate: str) -> int:
    """A tc rate in bytes a second, parsed as tc parses it (ValueError,
    KeyError when it is not one)."""
    return int(module("pyroute2.netlink.rtnl.tcmsg.common").get_rate(rate))


def tc_rate_units() -> list[str]:
    return list(module("pyroute2.netlink.rtnl.tcmsg.common").rate_suffixes)
