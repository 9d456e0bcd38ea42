"""Socket sums as the queues metrics read them: buckets, backlogs, totals."""

from pyprobe.tcpsummary import Summary

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
