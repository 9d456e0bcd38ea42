"""Socket sums as the queues metrics read them: buckets, backlogs, totals."""

from pyprobe.netns.snapshot import Summary

ESTABLISHED, LISTEN, TIME_WAIT = 1, 10, 6


def test_sums_of_sockets_as_sock_diag_gives_them():
    sockets = [
        (ESTABLISHED, 0, 0),
        (ESTABLISHED, 0, 0),
        (ESTABLISHED, 1024, 0),  # le="1024" holds 1024 itself
        (ESTABLISHED, 1025, 70000),
        (TIME_WAIT, 0, 0),
        (LISTEN, 3, 4),  # accept queue 3 of 4
        (LISTEN, 1, 128),
        (LISTEN, 0, 0),  # a limit of 0 is no fraction
    ]
    s = Summary.from_sockets(sockets)
    assert s.states == {ESTABLISHED: 4, TIME_WAIT: 1, LISTEN: 3}
    assert s.backlog == 4 and s.fullest == 0.75
    assert s.total("recv") == 2049 and s.total("send") == 70000
    recv = dict(s.buckets("recv"))
    assert (recv["0"], recv["1024"], recv["16384"], recv["+Inf"]) == (3, 4, 5, 5)
    send = dict(s.buckets("send"))
    assert (send["65536"], send["262144"], send["+Inf"]) == (4, 5, 5)
    assert list(recv)[-1] == "+Inf" and len(recv) == 9


def test_no_sockets():
    s = Summary.from_sockets([])
    assert s.states == {} and s.backlog == 0 and s.fullest == 0.0
    assert dict(s.buckets("send"))["+Inf"] == 0


def test_steady_requests_are_served_from_a_pass_taken_before_they_come():
    import threading
    import time

    from pyprobe.netns.snapshot import Snapshots

    takers: list[str] = []
    started: dict[int, float] = {}  # each pass's result -> when that pass began

    def take():
        takers.append(threading.current_thread().name)
        began = time.monotonic()
        time.sleep(0.01)
        data = {1: Summary.from_sockets([(ESTABLISHED, 0, 0)])}
        started[id(data)] = began
        return data

    snaps = Snapshots(take)
    came, served = [], []
    for _ in range(6):
        came.append(time.monotonic())
        data = snaps.get(max_age=0.2)
        assert data[1].states == {ESTABLISHED: 1}
        served.append(data)
        assert snaps.get(max_age=0.2) is snaps.get(max_age=0.2)  # the same scrape: no pass
        time.sleep(0.3)
    # The first three requests set the pace and take their own pass; each
    # later one finds a pass that a timer started before it came (and the
    # last sleep saw one more, for a request that never came). Judged by
    # order, not by how long get() took (it was < 5 ms): under emulation (the
    # Vagrant box, TCG) the timer's thread can be late enough that a request
    # waits for the rest of a pass begun ahead of it, which is still that
    # pass (the design: Snapshots.lead).
    assert takers[:3] == ["MainThread"] * 3
    assert len(takers) == 7 and "MainThread" not in takers[3:]
    assert all(started[id(d)] < t for d, t in zip(served[3:], came[3:], strict=True))
    assert len({id(d) for d in served}) == 6  # a new pass for each request


def test_one_late_request_does_not_lose_the_pace():
    """A scraper on fixed ticks whose request comes late once (it, or the
    network, stalled): the requests after it are still served from a pass
    taken ahead. Judged by every gap alike, the late one put two gaps off
    and the three requests after it each waited for a pass of their own."""
    import threading
    import time

    from pyprobe.netns.snapshot import Snapshots

    takers: list[str] = []

    def take():
        takers.append(threading.current_thread().name)
        time.sleep(0.01)
        return {}

    snaps = Snapshots(take)
    start = time.monotonic()
    by_request = []
    for k in range(11):
        late = 0.1 if k == 6 else 0.0
        time.sleep(max(0.0, start + 0.3 * k + late - time.monotonic()))
        before = len(takers)
        snaps.get(max_age=0.15)
        by_request.append(takers[before:])
    # The first three set the pace; from then on each request finds its pass
    # taken by the timer's thread. The late one may find it too old and take
    # its own; the four after it are served ahead again.
    counts = [len(t) for t in by_request]
    assert counts[:6] == [1, 1, 1, 0, 0, 0] and counts[7:] == [0, 0, 0, 0], by_request


def test_three_even_requests_set_the_pace_after_an_odd_first_one():
    """The daemon's own first collection (or an operator's curl) comes off
    the scraper's ticks: three even requests after it are enough."""
    import time

    from pyprobe.netns.snapshot import Snapshots

    calls: list[float] = []
    snaps = Snapshots(lambda: calls.append(time.monotonic()) or {})
    snaps.get(max_age=0.15)
    time.sleep(0.2)  # past max_age: a request of its own
    start = time.monotonic()
    for k in range(4):
        time.sleep(max(0.0, start + 0.3 * k - time.monotonic()))
        snaps.get(max_age=0.15)
    # the odd one, then three taken at the request; the fourth was ahead of it
    assert len(calls) == 5 and calls[4] < start + 0.9


def test_irregular_requests_take_their_own_pass():
    import time

    from pyprobe.netns.snapshot import Snapshots

    calls = []
    snaps = Snapshots(lambda: calls.append(1) or {})
    for pause in (0.05, 0.3, 0.1, 0.4, 0.06):
        snaps.get(max_age=0.01)
        time.sleep(pause)
    assert len(calls) == 5
    time.sleep(0.5)
    assert len(calls) == 5  # nothing prefetched behind them


def test_a_failed_pass_ahead_leaves_the_request_to_take_its_own():
    import time

    from pyprobe.netns.snapshot import Snapshots

    calls = []

    def take():
        calls.append(time.monotonic())
        if len(calls) == 4:  # the one ahead of the fourth request
            raise OSError("namespace gone")
        return {len(calls): None}

    snaps = Snapshots(take)
    for _ in range(3):
        snaps.get(max_age=0.1)
        time.sleep(0.25)
    assert len(calls) == 4  # the pass ahead ran, and failed
    assert snaps.get(max_age=0.1) == {5: None}  # so this request took its own


def test_a_pass_slower_than_max_age_still_goes_ahead_and_is_not_taken_twice():
    """One slow pass (a stalled host, a million sockets) must not send the
    next request back to a pass of its own: it waits for the rest of the one
    that began before it came."""
    import time

    from pyprobe.netns.snapshot import Snapshots

    calls = []

    def take():
        calls.append(time.monotonic())
        time.sleep(0.25)  # longer than max_age
        return {len(calls): None}

    snaps = Snapshots(take)
    for _ in range(3):
        snaps.get(max_age=0.2)
        time.sleep(0.8)
    start = time.monotonic()
    assert snaps.get(max_age=0.2) == {4: None}  # the pass ahead, not a fifth
    waited = time.monotonic() - start
    assert len(calls) == 4
    assert calls[3] < start and waited < 0.2  # begun ahead: only its rest waited for
