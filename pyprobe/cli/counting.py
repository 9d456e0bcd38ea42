"""Every probe's command, made from its manifest and plug-in: `pyprobe NAME
[INTERVAL [COUNT]] -j -n N --netns NS`, its plug-in's own options, and with
an event stream `--stream -T -d SECONDS -b PAGES`, as bcc's tools take them.

Counting: every INTERVAL seconds (or once at Ctrl-C) each metric's change
since the last report and its total, read from the in-kernel maps; rows a
probe hides by default (benign drops) are left out and noted under the
tables."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import click

from ..core.probe import Probe
from ..core.text import json_line
from ..netns.namespaces import resolve_netns
from ..probes import Registry
from ..views.tables import metric_tables, print_tables
from ..views.watch import intervals, row_key, stream, with_deltas
from .common import (
    CONTEXT,
    LOADING,
    STREAMING,
    Documented,
    attached,
    cgroup_filter,
    cgroup_options,
    counts_take_no_stream_options,
    format_option,
    interval_args,
    netns_option,
    stream_options,
    stream_takes_no_interval,
    top_option,
)


def counts(
    name: str,
    as_json: bool,
    top: int,
    interval: float | None,
    count: int | None,
    netns: int | None = None,
    options: Mapping[str, Any] | None = None,
    features: tuple[str, ...] = (),
    cgroup: int | None = None,
) -> None:
    """The counting view of a probe: [INTERVAL [COUNT]] like the bcc tools."""
    with attached(name, options=options, features=features, cgroup=cgroup) as probe:
        titles = {m.name: m.name for m in probe.manifest.metrics}
        intro = f"Counting {name} via {probe.hook_label}... " + (
            "Ctrl-C to end" if interval is None else f"every {interval:g}s"
        )
        previous: dict[tuple, dict[str, Any]] = {}

        def report(n: int) -> None:
            nonlocal previous
            everything = [r for r in probe.rows() if netns is None or _in_netns(r, netns)]
            rows = with_deltas([r for r in everything if not probe.hides(r)], previous)
            previous = {row_key(r): r for r in rows}
            if as_json:
                record = {"time": time.time(), "probe": name, "hook": probe.hook_label}
                print(json_line({**record, "rows": rows}), flush=True)
                return
            print_tables(metric_tables(rows, titles, top))
            if not rows:
                click.echo(f"{time.strftime('%H:%M:%S')} no {name} events")
            note = probe.note(everything)
            if note:
                click.echo(note)

        intervals(report, interval, count, intro=intro)


def _in_netns(row: Mapping[str, Any], inode: int) -> bool:
    return "netns" not in row or str(row["netns"]) == str(inode)


def watch_stream(
    probe: Probe,
    as_json: bool,
    timestamp: bool,
    duration: float | None,
    netns: int | None = None,
    what: str = "",
) -> None:
    """A probe's stream as lines or NDJSON, filtered in user space only
    where the program could not filter it already."""
    keep = probe.stream_keep()
    if netns is not None:
        inner = keep
        keep = lambda ev: ev["netns"] == netns and (inner is None or inner(ev))  # noqa: E731
    stream(probe, as_json, timestamp, duration, keep, what=what)


def examples(registry: Registry, name: str) -> list[str]:
    """A probe command's examples, from what its manifest offers (features,
    a stream, the cgroup label), each with what it does."""
    manifest = registry.manifests[name]
    lines = [
        (f"pyprobe {name}", "count until Ctrl-C, then the totals"),
        (f"pyprobe {name} 5 12", "every 5 s for a minute"),
        (f"pyprobe {name} --netns blue -n 5 1 1", "one second in namespace blue, top 5"),
        (f"pyprobe {name} -j 10 1 | jq .", "ten seconds' counts as JSON"),
    ]
    plain = [f for f in manifest.features if not f.label]
    if plain:
        lines.append((f"pyprobe {name} -F {plain[0].name} 5", plain[0].help))
    if any(f.label and f.name == "cgroup" for f in manifest.features):
        lines.append((f"pyprobe {name} --container 3f2a 5", "only one container's sockets"))
    if manifest.event is not None:
        lines.append((f"pyprobe {name} --stream -T -d 10", "each event for ten seconds"))
    width = max(len(cmd) for cmd, _ in lines)
    return [f"{cmd:<{width}}  # {what}" for cmd, what in lines]


def probe_command(registry: Registry, name: str) -> click.Command:
    """`pyprobe NAME`, made from the probe's manifest and plug-in."""
    manifest = registry.manifests[name]
    cls = registry.probe_class(name)
    has_stream = manifest.event is not None

    def run(
        as_json: bool,
        top: int,
        netns: str | None,
        interval: float | None,
        count: int | None,
        stream: bool = False,
        timestamp: bool = False,
        duration: float | None = None,
        buffer_pages: int | None = None,
        feature: tuple[str, ...] = (),
        cgroup: str | None = None,
        container: str | None = None,
        **options: Any,
    ) -> None:
        inode = resolve_netns(netns) if netns else None
        in_cgroup = cgroup_filter(cgroup, container)
        if stream:
            stream_takes_no_interval(interval)
            with attached(name, buffer_pages, options, feature, in_cgroup, stream=True) as probe:
                watch_stream(probe, as_json, timestamp, duration, inode)
            return
        counts_take_no_stream_options(timestamp, duration, buffer_pages)
        counts(name, as_json, top, interval, count, inode, options, feature, in_cgroup)

    command: Callable[..., None] = run
    command = interval_args(command)
    command = top_option(command)
    command = format_option(command)
    for option in reversed(cls.OPTIONS):
        if option.flag:
            command = click.option(option.name, option.dest, is_flag=True, help=option.help)(
                command
            )
        else:
            command = click.option(option.name, option.dest, help=option.help)(command)
    if manifest.features:
        names = [f.name for f in manifest.features]
        command = click.option(
            "-F",
            "--feature",
            multiple=True,
            type=click.Choice([*names, "all"]),
            help="Turn on a feature (repeat; all: every one): "
            + "; ".join(f"{f.name}: {f.help}" for f in manifest.features)
            + ".",
        )(command)
    command = netns_option(command)
    if any(f.label and f.name == "cgroup" for f in manifest.features):
        command = cgroup_options(command)
    if has_stream:
        command = stream_options(command)
    text = manifest.description or manifest.summary
    more = (
        "\n\n\b\n[INTERVAL [COUNT]]: counts every INTERVAL seconds, COUNT times "
        "(default: at Ctrl-C)."
    )
    if has_stream:
        more += "\n--stream: one line per event (-j: NDJSON), until Ctrl-C or -d."
    more += "\n\n\b\nExamples:\n" + "\n".join(f"  {line}" for line in examples(registry, name))
    return click.command(
        name,
        cls=Documented,
        context_settings=CONTEXT,
        help=text + more,
        environment=STREAMING if has_stream else LOADING,
    )(command)
