"""The socket pass (tcpsummary) reads each namespace's devices on the visit
it makes anyway and hands them to the label decoders: a scrape that follows
it does not walk through the namespaces a second time."""

from __future__ import annotations

import time

import pytest

from pyprobe.lab.pair import VethPair
from pyprobe.netns import devices, links, namespaces, snapshot

pytestmark = [pytest.mark.root]


def test_a_socket_pass_leaves_every_namespaces_device_names_fresh(monkeypatch):
    with VethPair(prefix=f"pl{time.monotonic_ns() % 100000}", net=84) as pair:
        snapshot._SNAPSHOTS.expire()
        found = snapshot.snapshot()
        inode = pair.inode(pair.b)
        assert found[inode].links is not None
        # what the decoders now hold is the namespace's own link table
        assert links.TABLE.links[inode] == devices.links(pair.path(pair.b))
        assert pair.dev_b in links.TABLE.links[inode].values()
        walks: list[object] = []
        real = namespaces.each_netns
        monkeypatch.setattr(
            namespaces, "each_netns", lambda *a, **k: walks.append(a) or real(*a, **k)
        )
        links.TABLE.fresh()  # what a scrape's label decoding asks first
        assert walks == []
