"""The shared table of every namespace's devices: a namespace's inode is
reused once it is gone, so a name known for (inode, ifindex) is trusted for
a second at most."""

import time

from pyprobe.netns import links


def test_a_known_device_is_read_again_once_the_table_is_a_second_old(monkeypatch):
    views = iter([{7: ({2: "lan"}, 0)}, {7: ({2: "eth0"}, 0)}])  # inode 7 reused
    reads: list[int] = []

    def each_netns(fn, denied):
        reads.append(1)
        return next(views)

    monkeypatch.setattr(links, "each_netns", each_netns)
    table = links.Links()
    assert table.get(7, 2) == {2: "lan"} and len(reads) == 1
    assert table.get(7, 2) == {2: "lan"} and len(reads) == 1  # fresh: not read again
    table.at = time.monotonic() - 1.5
    assert table.get(7, 2) == {2: "eth0"} and len(reads) == 2
