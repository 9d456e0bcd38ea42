"""The issue's targets, judged on a run's results (results.json): by the
fine A/B phase's ratios where the run has them, the whole-tool arms' beside
them; ns/run net of the floor arm; the streams' losses and lossless rates;
the exporter's scrapes, start-up and memory.
"""

from __future__ import annotations

import statistics

from . import lossless
from .arms import FLOOR, hook_floor
from .workloads import CHURN_LO, CHURN_VETH, IPERF


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def unbeaten(res: dict) -> str:
    """ "≥ " when a tool passed every step of the lossless search: its rate is
    the source's limit in that run, not the tool's."""
    steps = res.get("steps", [])
    passed = len(steps) == len(lossless.RATES) and all(
        st["complete"] and st["kept_pace"] for st in steps
    )
    return "≥ " if passed else ""


def targets(r: dict) -> list[tuple[str, str, bool]]:
    arms, base = r["arms"], r["arms"]["none"]["workloads"]

    def ratio(arm: str, w: str) -> float:
        vals, b = arms[arm]["workloads"].get(w, []), med(base.get(w, []))
        return med([v / b for v in vals]) if vals and b else float("nan")

    def ratios(xs: list[float]) -> str:
        """Three decimals: at two, 0.945 reads "0.95" beside a "no" for ≥ 0.95."""
        return " / ".join(f"{x:.3f}" for x in xs)

    def ns(arm: str) -> dict[str, float]:
        """ns/run of the arm's programs that ran at least 1,000 times a second:
        one that ran a handful of times (drops, on a drop or two) shows only
        its cold caches."""
        return {
            p: med([s[0] for s in v])
            for p, v in arms[arm]["programs"].items()
            if med([s[1] for s in v]) >= 1000
        }

    out = []
    default, every = "pyprobe exporter, default", "pyprobe exporter, every probe and feature"
    # (named "floor: empty programs (…)" in results from before it took every hook)
    floor_arm = next((a for a in arms if a.startswith("floor:")), FLOOR)
    churn = [CHURN_LO, CHURN_VETH]
    fine_ab = r.get("fine") or {}

    def judged(arm: str, fine_arm: str, ws: list[str]) -> tuple[list[float], str]:
        """The fine A/B ratios where the run has them (what a target is judged
        by), with the whole-tool arm's beside them; else the whole tool's."""
        whole = [ratio(arm, w) for w in ws]
        res = fine_ab.get(fine_arm, {})
        if not all("ratio" in res.get(w, {}) for w in ws):
            return whole, ratios(whole)
        fine_r = [res[w]["ratio"] for w in ws]
        return fine_r, f"fine A/B {ratios(fine_r)} (whole tool: {ratios(whole)})"

    # Issue 29: the exporter's default costs at most 1%, on churn (loopback,
    # veth) and on iperf3; every probe and feature, within 2% of the floor of
    # its own hooks (what their dispatch alone costs).
    d, text = judged(default, "default", churn)
    out.append(("exporter, default: churn ≥ 0.99", text, min(d) >= 0.99))
    i_d, text = judged(default, "default", [IPERF])
    out.append(("exporter, default: iperf3 ≥ 0.99", text, min(i_d) >= 0.99))
    e, text = judged(every, "all", churn)
    f, floor_text = judged(floor_arm, "floor", churn)
    within = [a / b for a, b in zip(e, f, strict=True) if b]
    out.append(
        (
            "exporter, every probe and feature: churn within 2% of its floor",
            f"{text}; the floor arm (its hooks, empty programs): {floor_text}; "
            f"ratio to the floor {ratios(within)}",
            bool(within) and min(within) >= 0.98,
        )
    )
    # Issue 32: `pyprobe trace` attached with a filter that matches nothing
    # costs at most 3% of churn (fine A/B alone: it has no whole-tool arm).
    t = fine_ab.get("trace", {})
    if all("ratio" in t.get(w, {}) for w in churn):
        t_r = [t[w]["ratio"] for w in churn]
        out.append(("trace, a filter matching nothing: churn ≥ 0.97", f"fine A/B {ratios(t_r)}",
                    min(t_r) >= 0.97))  # fmt: skip
    # Counters only add to a per-CPU slot; the others keep state between
    # events (a softirq's start time, a socket's owner) or read more of it.
    stateful = {
        "softirqs: on_entry",
        "softirqs: on_exit",
        "tcpretrans: on_retransmit",
        "tcpretrans: on_reset_sent",
        "tcpretrans: on_reset_received",
        "drops: on_raw_tp",
    }
    floor_ns = ns(floor_arm)
    floor = med(list(floor_ns.values())) if floor_ns else 0.0
    every_ns = ns(every)
    # The kernel keeps 15 characters of a program's name (on_reset_receiv).
    stateful = {f"{probe}: {prog[:15]}" for probe, prog in (k.split(": ") for k in stateful)}
    counters = {k: v for k, v in every_ns.items() if k not in stateful}
    others = {k: v for k, v in every_ns.items() if k in stateful}

    def net(program: str, value: float) -> float:
        """ns/run less the floor arm's empty program on the same hook (dispatch
        costs differ by hook: 65-80 ns here), or their median."""
        return value - floor_ns.get(hook_floor(program), floor)

    for title, group, limit in (
        ("counter programs ≤ 40 ns/run", counters, 40),
        ("stateful programs ≤ 100 ns/run", others, 100),
    ):
        if group:
            nets = [net(k, v) for k, v in group.items()]
            out.append(
                (
                    f"{title} (as measured; net of the floor on the same hook)",
                    f"{min(group.values()):.0f}–{max(group.values()):.0f} ns; net "
                    f"{min(nets):.0f}–{max(nets):.0f} ns (floor {min(floor_ns.values()):.0f}–"
                    f"{max(floor_ns.values()):.0f} ns)",
                    max(nets) <= limit,
                )
            )
    # Each pyprobe program against every peer program on the same hook.
    peers = [
        (every, "tcpstates: on_raw_tp", "tcpstates-bpfcc", "tracepoint__sock__inet_sock_set_state"),
        (every, "tcpstates: on_raw_tp", "tcplife-bpfcc", "tracepoint__sock__inet_sock_set_state"),
        (every, "tcpstates: on_raw_tp", "bpftrace: count inet_sock_set_state", "inet_sock_set_s"),
        (
            "pyprobe tcpstates -j (stream)",
            "tcpstates: on_raw_tp",
            "tcpstates-bpfcc",
            "tracepoint__sock__inet_sock_set_state",
        ),
        (every, "softirqs: on_entry", "softirqs-bpfcc", "tracepoint__irq__softirq_entry"),
        (every, "softirqs: on_exit", "softirqs-bpfcc", "tracepoint__irq__softirq_exit"),
        (
            every,
            "netdev: on_xmit",
            "bpftrace: count net_dev_xmit+netif_receive_skb",
            "net_dev_xmit",
        ),
        (
            every,
            "netdev: on_receive",
            "bpftrace: count net_dev_xmit+netif_receive_skb",
            "netif_receive_s",
        ),
        (
            every,
            "tcpretrans: on_retransmit",
            "tcpretrans-bpfcc",
            "tracepoint__tcp__tcp_retransmit_skb",
        ),
    ]
    duels = []
    for arm, ours, peer_arm, theirs in peers:
        a, b = ns(arm).get(ours), ns(peer_arm).get(theirs)
        if a is not None and b is not None:
            duels.append((f"{ours} {a:.0f} vs {peer_arm} {b:.0f}", a < b))
    if duels:
        lost_duels = [d for d, won in duels if not won]
        out.append(
            (
                "every pyprobe program beats the peers on its hook (ns/run)",
                f"{len(duels) - len(lost_duels)} of {len(duels)}"
                + (f"; not: {'; '.join(lost_duels)}" if lost_duels else ""),
                not lost_duels,
            )
        )
    stream = "pyprobe tcpstates -j (stream)"
    s_ns = ns(stream).get("tcpstates: on_raw_tp", float("nan"))
    out.append(
        (
            "stateful (streaming) tcpstates ≤ 100 ns/run (net of the floor)",
            f"{s_ns:.0f} ns; net {s_ns - floor:.0f} ns",
            s_ns - floor <= 100,
        )
    )
    losses = [x["lost"] for x in arms[stream]["stream"]]
    known = None not in losses
    lost = sum(losses) if known else 0
    sr, text = judged(stream, "stream", churn)
    out.append(
        (
            "streaming tcpstates ≥ 0.85 × none (churn) with 0 lost (lost: the whole tool's)",
            text
            + ", "
            + (f"lost {lost:,}" if known else "lost unknown (a run had no exit summary)"),
            known and lost == 0 and min(sr) >= 0.85,
        )
    )
    rates = {k: v["events_per_s"] for k, v in r.get("lossless", {}).items()}
    if stream in rates and "tcpstates-bpfcc" in rates:
        ours, peer = rates[stream], rates["tcpstates-bpfcc"]
        at_least = unbeaten(r["lossless"][stream])
        out.append(
            (
                "streaming: lossless rate ≥ 5 × tcpstates-bpfcc's",
                f"{at_least}{ours:,.0f} vs {peer:,.0f} events/s "
                f"({at_least}{ours / peer if peer else float('inf'):.1f}×)",
                ours >= 5 * peer,
            )
        )
    sc = r["scrape"]
    p10, p100 = sc.get("10000", sc.get(10000)), sc.get("100000", sc.get(100000))
    if p10:
        out.append(
            ("scrape p99 ≤ 20 ms at 10k sockets", f"{p10['p99_ms']:.0f} ms", p10["p99_ms"] <= 20)
        )
    if p100:
        out.append(
            ("scrape p99 ≤ 50 ms at 100k sockets", f"{p100['p99_ms']:.0f} ms", p100["p99_ms"] <= 50)
        )
    if r.get("startup"):
        st = r["startup"]
        cold, warm = max(st["cold_s"]), max(st["warm_s"])
        every = lambda k: f" (every probe attached: {max(st[k]):.1f} s)" if st.get(k) else ""  # noqa: E731
        if st.get("installed_s"):
            first = max(st["installed_s"])
            out.append(
                (
                    "start to first data ≤ 3 s: first start after install (slowest)",
                    f"{first:.1f} s{every('installed_all_s')}",
                    first <= 3,
                )
            )
        out.append(
            (
                "start to first data ≤ 3 s: a start that compiles (cache off / new kernel; "
                "slowest)",
                f"{cold:.1f} s{every('cold_all_s')}",
                cold <= 3,
            )
        )
        out.append(
            (
                "start to first data ≤ 3 s: restart (programs kept; slowest)",
                f"{warm:.1f} s{every('warm_all_s')}",
                warm <= 3,
            )
        )
    else:
        starts = [s["startup_s"] for s in sc.values()]
        out.append(("start to first data ≤ 3 s", f"{max(starts):.1f} s", max(starts) <= 3))
    rss = [s["rss_mb"] for s in sc.values()]
    out.append(("daemon RSS ≤ 100 MB", f"{min(rss):.0f}–{max(rss):.0f} MB", max(rss) <= 100))
    return out
