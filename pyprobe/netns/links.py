"""Every namespace's devices (ifindex -> name) and cookie, in one table the
label decoders of every probe share: re-read at most once a second, or
sooner when a key names a device or namespace not seen yet."""

from __future__ import annotations

import threading
import time

from ..kernel.host import host
from .devices import links_and_cookie
from .namespaces import each_netns, named_netns

# Re-read the namespaces when a key names one we have not seen, at most this
# often (a namespace new since the last read; a dead one is pruned soon).
MISS_REFRESH = 0.1
HISTORY = 10_000  # gone namespaces remembered (their series are pruned soon)


class Links:
    """ifindex -> name in every namespace and the namespaces' cookies, shared by
    all probes' decoders; re-read at most once a second, or MISS_REFRESH after
    a miss (entering every namespace costs ~1 ms each)."""

    def __init__(self) -> None:
        self.links: dict[int, dict[int, str]] = {}
        self.by_cookie: dict[int, int] = {}  # cookie's low 32 bits -> inode
        self.history: dict[int, int] = {}  # the same, for namespaces since gone
        self.at = 0.0
        self.complete = False  # every namespace could be entered
        self.lock = threading.Lock()

    def get(self, netns: int, ifindex: int) -> dict[int, str]:
        """The namespace's links; re-read when the device is unknown (at
        most every MISS_REFRESH) or the table is over a second old: a
        namespace's inode is reused once it is gone, and a new namespace
        with the old one's inode and ifindexes would be named by the old
        one's devices (a trace hop in a lab's h2 on the last lab's rt's
        "lan")."""
        with self.lock:
            names = self.links.get(netns)
            known = names is not None and ifindex in names
            if (not known and self.age() > MISS_REFRESH) or self.age() > 1:
                self._refresh()
                names = self.links.get(netns)
            return names or {}

    def fresh(self) -> None:
        """Re-read when older than a second."""
        with self.lock:
            if self.age() > 1:
                self._refresh()

    def age(self) -> float:
        return time.monotonic() - self.at

    def inode_of(self, nid: int) -> int:
        """The inode of a live namespace's cookie, or of one that was alive
        (its series keep their label until pruned); 0 when never seen."""
        with self.lock:
            inode = self.by_cookie.get(nid, 0)
            if not inode and time.monotonic() - self.at > MISS_REFRESH:
                self._refresh()
                inode = self.by_cookie.get(nid, 0)
            return inode or self.history.get(nid, 0)

    def live(self, nid: int) -> bool:
        return nid in self.by_cookie

    def seen(self, found: dict[int, tuple[dict[int, str], int | None]], denied: bool) -> None:
        """Every namespace's links and cookie, read by a pass that visited
        them all anyway (the socket pass, netns/snapshot.py, taken just before a
        scrape): the scrape then finds the table fresh, not one more walk
        through the namespaces (~1.5 ms here)."""
        with self.lock:
            self._apply(found, denied)

    def _refresh(self) -> None:
        refused: list[str] = []
        found = each_netns(links_and_cookie, denied=refused)
        self._apply(found, bool(refused))

    def _apply(self, found: dict[int, tuple[dict[int, str], int | None]], denied: bool) -> None:
        links = {inode: links for inode, (links, _) in found.items()}
        if denied:
            # Namespaces we may no longer enter (privileges dropped): keep
            # what we knew of them; nothing is pruned on a partial view.
            links = {**self.links, **links}
        self.links = links
        self.by_cookie = {
            cookie & 0xFFFFFFFF: inode for inode, (_, cookie) in found.items() if cookie
        }
        self.history.update(self.by_cookie)
        while len(self.history) > HISTORY:
            del self.history[next(iter(self.history))]  # the oldest first
        self.at = time.monotonic()
        self.complete = not denied


TABLE = Links()


def links_seen(found: dict[int, tuple[dict[int, str], int | None]], denied: bool) -> None:
    """Every namespace's links and cookie (inode -> (ifindex -> name, cookie)),
    read by someone else's pass through them all (Links.seen)."""
    TABLE.seen(found, denied)


def read_namespaces() -> None:
    """Read every namespace's devices and cookie now (e.g. before dropping
    the privileges needed to enter them)."""
    with TABLE.lock:
        TABLE._refresh()


def netns_name(inode: int) -> str:
    """The name under /run/netns of a namespace inode, "" when it has none."""
    name = _netns_names(stale_after=1.0).get(inode)
    if name is None:
        # A namespace newer than the table (a container or `ip netns add`
        # since the last read): read again now, at most 20 times a second,
        # rather than print its first events without a name for a second.
        name = _netns_names(stale_after=0.05).get(inode, "")
    return name


def _netns_names(stale_after: float) -> dict[int, str]:
    # The kernel hands a freed namespace's inode to the next one: a table
    # read before `ip netns del a; ip netns add b` names b "a". Any such
    # change touches the directory, so its mtime (one stat) dates the table.
    now = time.monotonic()
    try:
        changed = host().netns_dir.stat().st_mtime_ns
    except OSError:
        changed = 0
    at, names, seen = _NETNS_CACHE
    if now - at > stale_after or changed != seen:
        names = named_netns()
        _NETNS_CACHE[:] = [now, names, changed]
    return names


_NETNS_CACHE: list = [0.0, {}, 0]
