"""`pyprobe why` joining what the other probes saw (views/evidence.py): a
counter's change while probing, and each finding replacing the trace's
vaguer cause or adding its own, only in the namespaces the packets crossed."""

from test_trace import tcp_packet

from pyprobe.views import why
from pyprobe.views.evidence import Evidence, changed


def test_changed_counters_are_their_change_and_gauges_as_they_are():
    before = [
        {"metric": "drops_total", "reason": "NO_SOCKET", "value": 5},
        {"metric": "drops_total", "reason": "TC_INGRESS", "value": 2},
        {"metric": "conntrack_entries", "value": 7},
    ]
    after = [
        {"metric": "drops_total", "reason": "NO_SOCKET", "value": 8},
        {"metric": "drops_total", "reason": "TC_INGRESS", "value": 2},
        {"metric": "drops_total", "reason": "NEIGH_FAILED", "value": 1},
        {"metric": "conntrack_entries", "value": 9},
    ]
    assert changed(before, after) == [
        {"metric": "drops_total", "reason": "NO_SOCKET", "value": 3},
        {"metric": "drops_total", "reason": "NEIGH_FAILED", "value": 1},
        {"metric": "conntrack_entries", "value": 9},
    ]


def syn_dropped(reason: str, ns: str = "h2"):
    p = tcp_packet(1, "S", "10.0.0.1", 40000, "10.0.0.2", 80, "drop",
                   drop_reason=reason, location="x+0x1")  # fmt: skip
    p.hops[-1]["netns_name"] = ns
    return p


def test_a_neighbour_failure_replaces_the_trace_s_neigh_failed_drop():
    ev = Evidence(
        rows={"drops": [{"metric": "drops_total", "netns_name": "h1", "reason": "NEIGH_FAILED",
                         "value": 1}]},
        events={"neigh": [{"kind": "failed", "netns_name": "h1", "addr": "10.0.0.2",
                           "device": "eth0"}],
                "icmp": [{"netns_name": "h1", "daddr": "10.0.0.2", "type": "dest_unreach",
                          "code": 1, "device": "eth0"}]},
    )  # fmt: skip
    found = why.causes("10.0.0.2:80", [why.Attempt("unreachable", 300)],
                       [syn_dropped("NEIGH_FAILED", "h1")], evidence=ev, source="h1")  # fmt: skip
    # (its ICMP host unreachable to the sender is that failure too)
    assert [c.text for c in found] == [
        "no ARP reply from 10.0.0.2 on eth0 in h1: resolution failed (neigh), 1 packets "
        "dropped NEIGH_FAILED (drops)"
    ]


def test_evidence_from_a_namespace_the_packets_did_not_cross_is_not_a_cause():
    ev = Evidence(
        rows={"queues": [{"metric": "tcp_listen_overflows_total", "netns_name": "elsewhere",
                          "value": 4}]},
        events={"drops": [{"reason": "TC_INGRESS", "netns_name": "elsewhere", "device": "x",
                           "location": "f+0x1", "protocol": "IPv4"}]},
    )  # fmt: skip
    syn = tcp_packet(1, "S", "10.0.0.1", 40000, "10.0.0.2", 80, "copy")
    found = why.causes("10.0.0.2:80", [why.Attempt("connected", 0.2)], [syn], evidence=ev,
                       source="h1")  # fmt: skip
    assert [c.text for c in found] == ["reachable: 1 of 1 attempts connected (median 0.20 ms)"]


def test_a_drop_off_the_traced_packets_is_added_and_other_families_are_not():
    ev = Evidence(
        rows={},
        events={"drops": [
            {"reason": "TC_INGRESS", "netns_name": "h2", "device": "eth0", "location": "f+0x1",
             "protocol": "ARP"},
            {"reason": "IPV6DISABLED", "netns_name": "h2", "device": "eth0",
             "location": "ip6_rcv_core+0x1", "protocol": "IPv6"},
        ]},
    )  # fmt: skip
    syn = tcp_packet(1, "S", "10.0.0.1", 40000, "10.0.0.2", 80, "copy")
    found = why.causes("10.0.0.2:80", [why.Attempt("timeout", 2000)], [syn], evidence=ev,
                       source="h1")  # fmt: skip
    assert "dropped by a tc filter (ingress) in netns h2 on eth0 (drops TC_INGRESS at f, 1 " \
        "packets)" in [c.text for c in found]  # fmt: skip
    assert not any("IPV6DISABLED" in c.text for c in found)


def timed_out_through_rt(ev: Evidence) -> list:
    """The causes of a connect from h1 that timed out, its SYN last seen in rt."""
    syn = tcp_packet(1, "S", "10.0.0.1", 40000, "10.0.0.2", 80, "xmit")
    syn.hops[-1]["netns_name"] = "rt"
    return why.causes("10.0.0.2:80", [why.Attempt("timeout", 2000)], [syn], evidence=ev,
                      source="h1")  # fmt: skip


def test_conntrack_trouble_in_a_crossed_namespace_is_a_cause():
    ev = Evidence(
        rows={"conntrack": [
            {"metric": "conntrack_drops_total", "netns_name": "rt", "value": 3},
            {"metric": "conntrack_insert_failed_total", "netns_name": "rt", "value": 1},
            {"metric": "conntrack_entries", "netns_name": "rt", "value": 64},
            {"metric": "conntrack_max_entries", "netns_name": "rt", "value": 64},
        ]},
        events={},
    )  # fmt: skip
    found = timed_out_through_rt(ev)
    # entries at the limit: a full table, said with every count
    assert (
        "conntrack table full in rt: 64/64 entries (nf_conntrack_max), 3 new connections "
        "dropped, 1 insert failed (conntrack)"
    ) in [c.text for c in found]


def test_conntrack_trouble_below_the_limit_is_not_a_full_table():
    ev = Evidence(
        rows={"conntrack": [
            {"metric": "conntrack_insert_failed_total", "netns_name": "rt", "value": 2},
            {"metric": "conntrack_entries", "netns_name": "rt", "value": 10},
            {"metric": "conntrack_max_entries", "netns_name": "rt", "value": 64},
        ]},
        events={},
    )  # fmt: skip
    texts = [c.text for c in timed_out_through_rt(ev)]
    assert "conntrack in rt: 2 insert failed (conntrack; table 10/64)" in texts
    assert not any(t.startswith("conntrack table full") for t in texts)
