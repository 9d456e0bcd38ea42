"""Each namespace's TCP sockets, summed: counts per state, Recv-Q/Send-Q
depth buckets, accept backlogs. What the queues metrics and tcpstates'
socket gauge need, read once per scrape for all of them (sock_diag).

Tried and measured (kernel 6.18, 2 vCPUs): a BPF TCP iterator summing in
the kernel costs ~5 ms per namespace before its first socket (it walks the
whole established hash under bucket locks) and ~1.2 µs per socket; a
sock_diag dump costs ~0.5 ms per namespace and ~1 µs per socket in the
kernel. So sock_diag it is, with the summing done on whole buffers.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter
from dataclasses import dataclass

from . import netlink, sockdiag
from .decoders import tcp_state

LISTEN = 10
# Bucket bounds of the queue-depth distribution (bytes), 0 first: most
# queues are empty.
QUEUE_BOUNDS = (0, 1024, 16384, 65536, 262144, 1048576, 4194304, 16777216)


@dataclass
class Summary:
    states: dict[int, int]  # TCP state number -> sockets (no zeros)
    recv: Counter[int]  # non-listeners' Recv-Q (unread bytes) -> sockets
    send: Counter[int]  # non-listeners' Send-Q (unacknowledged bytes) -> sockets
    backlog: int  # connections waiting in listeners' accept queues
    fullest: float  # the fullest listener's accept queue / its limit

    @classmethod
    def from_sockets(cls, stats: list[tuple]) -> Summary:
        """From sock_diag's (state, recv_q, send_q) per socket. Counted as
        whole tuples first (in C): 100k sockets are a few dozen distinct ones."""
        distinct = Counter(stats)
        states: Counter[int] = Counter()
        recv: Counter[int] = Counter()
        send: Counter[int] = Counter()
        backlog, fullest = 0, 0.0
        for (state, rq, wq), n in distinct.items():
            states[state] += n
            if state == LISTEN:
                backlog += rq * n
                if wq:
                    fullest = max(fullest, rq / wq)
                continue
            recv[rq] += n
            send[wq] += n
        return cls(dict(states), recv, send, backlog, fullest)

    def buckets(self, queue: str) -> list[tuple[str, float]]:
        """Cumulative Prometheus buckets (le, count) of "recv" or "send"."""
        depths = self.recv if queue == "recv" else self.send
        counts = [0] * (len(QUEUE_BOUNDS) + 1)
        for depth, n in depths.items():
            counts[bisect.bisect_left(QUEUE_BOUNDS, depth)] += n
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip(QUEUE_BOUNDS, counts, strict=False):
            running += n
            out.append((str(bound), running))
        out.append(("+Inf", sum(counts)))
        return out

    def total(self, queue: str) -> int:
        """Bytes in all those queues."""
        depths = self.recv if queue == "recv" else self.send
        return sum(depth * n for depth, n in depths.items())


_CACHE: dict[str, object] = {"at": 0.0, "data": {}}
_LOCK = threading.Lock()


def here() -> Summary:
    """The calling thread's namespace, summed."""
    return Summary.from_sockets(sockdiag.tcp_stats())


def snapshot(max_age: float = 0.5) -> dict[int, Summary]:
    """inode -> Summary for every namespace; one pass serves everything that
    asks within max_age seconds (e.g. one scrape's collectors)."""
    with _LOCK:
        if time.monotonic() - float(_CACHE["at"]) > max_age:  # type: ignore[arg-type]
            _CACHE["data"] = netlink.each_netns(here)
            _CACHE["at"] = time.monotonic()
        data: dict[int, Summary] = _CACHE["data"]  # type: ignore[assignment]
        return data


def state_counts_by_netns(only: int | None = None) -> dict[int, dict[str, int]]:
    """inode -> {state name: sockets}, like `netstat -n | awk` per namespace."""
    return {
        inode: {tcp_state(k): n for k, n in summary.states.items()}
        for inode, summary in snapshot().items()
        if only is None or inode == only
    }
