"""The socket pass (tcpsummary) reads each namespace's devices on the visit
it makes anyway and hands them to the label decoders: a scrape that follows
it does not walk through the namespaces a second time."""

from __future__ import annotations

import time

import pytest

from pyprobe import decoders, lab, netlink, tcpsummary

pytestmark = [pytest.mark.root]


def test_a_socket_pass_leaves_every_namespaces_device_names_fresh(monkeypatch):
    with lab.VethPair(prefix=f"pl{time.monotonic_ns() % 100000}", net=84) as pair:
        tcpsummary._SNAPSHOTS.expire()
        found = tcpsummary.snapshot()
        inode = pair.inode(pair.b)
        assert found[inode].links is not None
        # what the decoders now hold is the namespace's own link table
        assert decoders._LINKS.links[inode] == netlink.links(pair.path(pair.b))
        assert pair.dev_b in decoders._LINKS.links[inode].values()
        walks: list[object] = []
        real = netlink.each_netns
        monkeypatch.setattr(netlink, "each_netns", lambda *a, **k: walks.append(a) or real(*a, **k))
        decoders._LINKS.fresh()  # what a scrape's label decoding asks first
        assert walks == []
