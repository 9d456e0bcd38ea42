"""RESULTS.md, rendered from a run's results (results.json)."""

from __future__ import annotations

from . import lossless
from .arms import STREAMING
from .fine_phase import FINE_ARMS
from .scrape import WARMUP as scrape_warmup
from .targets import med, targets, unbeaten
from .workloads import FINE_GUARD


def slowest_toggle(fine_ab: dict) -> float:
    """The longest an attach or detach took in the fine phase (ms), 0 if unknown."""
    return max(
        (
            w.get("toggle_ms", 0.0)
            for res in fine_ab.values()
            for w in res.values()
            if "error" not in res
        ),
        default=0.0,
    )


def fine_section(r: dict) -> list[str]:
    """The fine A/B table (fine.py), when the run had that phase."""
    fine_ab, slices = r.get("fine") or {}, r.get("fine_slices") or {}
    intervals = r.get("fine_intervals") or []
    if not fine_ab:
        return []
    workloads = list(slices)
    lines = [
        "## Throughput, fine A/B: the same programs attached and detached between intervals",
        "",
        "Each arm's programs are loaded once (the exporter's probes, built as `pyprobe export`",
        "builds them, or the floor arm's empty ones); only their attachment changes, as each",
        "interval of one run of a workload ends, in pairs (off then on, on then off). Figure:",
        "the median of the pairs' on/off ratios [quartiles]. "
        + ("Intervals: " if intervals else "Slices (each a run of its own): ")
        + "; ".join(f"{w} {t:g} s × {2 * n}" for w, (t, n) in slices.items())
        + ". "
        + (
            f"Churn leaves the first {FINE_GUARD * 1e3:.0f} ms of each interval uncounted, "
            "where the toggle happens; iperf3 counts all of it. An interval whose toggle "
            "was not done by then (the slowest took "
            f"{toggle:.0f} ms), or was read late after one, is left out with its pair "
            "(pairs counted, where fewer than planned: in parentheses). "
            if intervals and (toggle := slowest_toggle(fine_ab))
            else ""
        )
        + "The whole-tool exporter arms above also carry the daemon's own process; the "
        "stream's is the command itself (`pyprobe tcpstates -j` to /dev/null, in the "
        "helper's process), its consumer included.",
        "",
        "| arm | " + " | ".join(workloads) + " |",
        "|---|" + "---|" * len(workloads),
    ]
    for arm, res in fine_ab.items():
        if "error" in res:
            lines.append(f"| {FINE_ARMS.get(arm, arm)} | fails here: {res['error']['why'][:80]} |")
            continue
        cells = [
            f"{res[w]['ratio']:.3f} [{res[w]['q1']:.3f}–{res[w]['q3']:.3f}]"
            + (f" ({res[w]['pairs']} of {n})" if res[w]["pairs"] < n else "")
            if "ratio" in res.get(w, {})
            else "-"
            for w, (_, n) in slices.items()
        ]
        lines.append(f"| {FINE_ARMS.get(arm, arm)} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def markdown(r: dict) -> str:
    arms = r["arms"]
    base = arms["none"]["workloads"]
    workloads = list(base)
    m = r["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"{r['date']} · {m['host']} · kernel {m['kernel']} · {m['cpus']} × {m['cpu']} · "
        f"{r['reps']} repetitions × {r['seconds']:g} s per workload, arms alternating · "
        f"whole run {r['duration_s'] / 60:.1f} min. Produced by `make bench` (python -m bench).",
        "",
        "## Throughput, as a ratio to no tracing (median, [min–max] over repetitions)",
        "",
        "| arm | " + " | ".join(workloads) + " |",
        "|---|" + "---|" * len(workloads),
    ]
    for name, res in arms.items():
        if res["error"]:
            lines.append(
                f"| {name} | "
                + " | ".join(["fails here: " + res["error"][:60]] + [""] * (len(workloads) - 1))
                + " |"
            )
            continue
        cells = []
        for w in workloads:
            vals, b = res["workloads"].get(w, []), med(base.get(w, []))
            if name == "none":
                cells.append(f"{med(vals):,.2f}" if "Gbit" in w else f"{med(vals):,.0f}")
            else:
                ratios = [v / b for v in vals] if b else []
                cells.append(
                    f"{med(ratios):.2f} [{min(ratios):.2f}–{max(ratios):.2f}]" if ratios else "-"
                )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "(The `none` row is absolute: connections/s, packets/s, Gbit/s.)",
        "",
        *fine_section(r),
        "## BPF programs: ns per run and runs per second (kernel.bpf_stats_enabled)",
        "",
        "| arm | program | ns/run | runs/s |",
        "|---|---|---|---|",
    ]
    for name, res in arms.items():
        for prog, samples in sorted(res["programs"].items()):
            lines.append(
                f"| {name} | {prog} | {med([s[0] for s in samples]):.0f} | "
                f"{med([s[1] for s in samples]):,.0f} |"
            )
    lines += [
        "",
        "## Streaming: events captured per second and lost (during all workloads)",
        "",
        "| tool | events/s | lost |",
        "|---|---|---|",
    ]
    for name in STREAMING:
        for s in arms[name]["stream"]:
            lost = "unknown: no exit summary" if s["lost"] is None else s["lost"]
            lines.append(f"| {name} | {s['events_per_s']:,.0f} | {lost} |")
    lines += [
        "",
        "## Streaming: the highest rate kept up with, losing nothing",
        "",
        f"Offered load steps up ({', '.join(f'{x // 1000}k' for x in lossless.RATES)} "
        f"attempts/s, each a socket's listen() and disconnect: 2 state changes, "
        f"LISTEN and CLOSE, no packets; "
        f"{lossless.CLIENTS} paced clients, {lossless.SECONDS:g} s a step); "
        "a step passes when every event was printed and the clients kept pace (95% of the "
        "offered rate, or of what they reach with no tool if less).",
        "",
        "| tool | highest lossless rate (events/s) "
        "| steps (offered → reached attempts/s: printed/expected) |",
        "|---|---|---|",
    ]
    for name, res in r.get("lossless", {}).items():
        steps = "; ".join(
            f"{st['offered_s'] // 1000}k → {st['reached_s'] / 1000:.1f}k: "
            f"{st['events']:,}/{st['expected']:,.0f}"
            + ("" if st["complete"] and st["kept_pace"] else " ✗")
            for st in res["steps"]
        )
        lines.append(
            f"| {name} | {unbeaten(res)}{res['events_per_s']:,.0f} | {res['error'][:80] or steps} |"
        )
    if r.get("lossless_ceiling"):
        reach = "; ".join(
            f"{st['offered_s'] // 1000}k → {st['reached_s'] / 1000:.1f}k"
            for st in r["lossless_ceiling"]
        )
        lines += [
            "",
            f"The clients alone, no tool (offered → reached attempts/s): {reach}. Past the "
            "rate they reach alone no step can pass, whatever the tool.",
        ]
    lines += [
        "",
        "## The exporter: scrape time, series, memory, start-up",
        "",
        "| live sockets | scrape p50 | scrape p99 (the slowest) | of those, waited for a socket "
        "pass | first scrapes (pace not yet known) | series | RSS | start to first data |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, s in r["scrape"].items():
        first = f"{s['unanticipated_ms']:.1f} ms" if "unanticipated_ms" in s else "–"
        measured = len(s.get("each_ms", [])) - scrape_warmup
        waited = f"{s['waited_for_pass']} of {measured}" if "waited_for_pass" in s else "–"
        lines.append(
            f"| {int(n):,} | {s['p50_ms']:.1f} ms | {s['p99_ms']:.1f} ms | {waited} | "
            f"{first} | {s['series']} | {s['rss_mb']:.0f} MB | {s['startup_s']:.1f} s |"
        )
    if r.get("startup"):
        st = r["startup"]
        each = lambda k: " / ".join(f"{x:.2f}" for x in st.get(k, ()))  # noqa: E731
        every = lambda k: f" (every probe attached: {each(k)} s)" if st.get(k) else ""  # noqa: E731
        installed = (
            f"the first start after an install (`pyprobe compile`, run by `make setup`, "
            f"compiled the programs for this kernel) {each('installed_s')} s"
            f"{every('installed_all_s')}; "
            if st.get("installed_s")
            else ""
        )
        cold = (
            f"compiling every program at start (the program cache off, or a kernel nothing "
            f"was compiled for) {each('cold_s')} s{every('cold_all_s')}; "
        )
        warm = (
            f"loading the programs an earlier start kept (a restart) {each('warm_s')} s"
            f"{every('warm_all_s')}."
        )
        lines += [
            "",
            "Start to first data with no socket load (exec to the first /metrics answer "
            "with a probe's series: the daemon serves from its first attached probe on "
            "while the rest load): " + installed + cold + warm + " The table's column is a "
            "start with the programs kept (the arms above ran the exporter before) to its "
            "first scrape with every probe attached, counting that many sockets.",
        ]
    lines += [
        "",
        "## Targets (issue 7), measured in this run",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    for target, measured, ok in targets(r):
        lines.append(f"| {target} | {measured} | {'yes' if ok else '**no**'} |")
    lines += [
        "",
        "## Reading these numbers",
        "",
        "- Churn and small UDP run one client/server pair pinned to each CPU, so the CPUs",
        "  are busy and a tool's cost (in the kernel or in its own process) comes out of the",
        "  workload's throughput. (Until 2026-12-01 one unpinned ping-pong client left the",
        "  CPUs half idle: this VM's halts and wake-ups set its pace, at 6.9k conn/s, and an",
        "  arm that kept a CPU busy, such as a stream, came out *above* 1.) iperf3 is a",
        "  stream per CPU, its client and server pinned together there (until 2026-12-02 one",
        "  unpinned stream, reordered between the CPUs' backlogs: thousands of spurious",
        "  retransmits a second, ±10% from one half second to the next). This is a 2-vCPU",
        "  Firecracker VM: whole-tool ratios still move by ±0.05 between repetitions (see",
        "  the spreads and the floor arm); the fine A/B phase is what resolves a few %.",
        "- The exporter's default (issue 29) reads what the kernel counts already (device",
        "  counters, /proc/softirqs and /proc/stat, softnet_stat) at scrape time and attaches",
        "  hooks only for what it does not count; its target is ≥ 0.99 on churn and iperf3.",
        "  Every probe with every feature puts programs on each packet's path: its target is",
        "  to cost at most 2% more than empty programs on the same hooks (the floor arm).",
        "- An arm's workloads start once its tool has attached and gone idle (at most one",
        "  clock tick of CPU in half a second): start-up work after attaching (a first",
        "  collection, freeing a compiler's memory) does not land on the first workload.",
        "- `none` is measured at the start and the end of every repetition; the other arms",
        "  run forward in one repetition and backward in the next. Ratios use the median",
        "  of all `none` runs. The floor arm (empty programs) shows how far apart two",
        "  nearly equal arms can land on this VM.",
        "- Throughput is measured with kernel.bpf_stats_enabled off, as the tools are deployed.",
        "  ns/run comes from a second, shorter pass of each arm (churn and small UDP, 0.5 s each)",
        "  with it on; it times each run with two clock reads, which with the raw tracepoint's",
        "  dispatch cost what the `floor` arm shows (empty programs on the same hooks).",
        "  Targets are judged net of it. runs/s are of that pass.",
        "- Scrapes are measured against the real exporter 1.05 s apart, as Prometheus would",
        "  (cold caches each time), not back to back, and with its request headers: OpenMetrics",
        "  asked for first, gzip (until 2026-12-02 the plain text format, uncompressed; the",
        "  exporter writes both in ~1.5 ms). Once three requests have come at a",
        "  steady pace, the exporter counts sockets (sock_diag, ~1 µs a socket in the kernel)",
        "  just before the next is due, so p50/p99 are of scrapes served from a count at most",
        "  2 × its duration + 50 ms old; the first four (the daemon's own first collection",
        "  and three that set the pace), which count while the scraper waits, are reported",
        "  apart. With 30 measured, p99 is the slowest; the daemon's debug log says how",
        "  many still counted sockets while the scraper waited (the pace lost).",
        "- The lossless search counts every state change the kernel made during a step with",
        "  a counting program of its own and compares each tool's printed events with it.",
        "",
    ]
    return "\n".join(lines)
