"""`pyprobe export`: the Prometheus exporter daemon (pyprobe/exporter/)."""

from __future__ import annotations

import sys

import click

from ..exporter.caps import parse_caps
from ..exporter.daemon import LABELS, Options, run
from ..load.cache import DEFAULT_DIR
from ..logs import FORMATS, LEVELS
from ..logs import setup as setup_logging
from ..paths import rules_file, systemd_unit
from .common import (
    CONTEXT,
    LOADING,
    Documented,
    Terminated,
    complete_probes,
    context,
    host_path_options,
)


@click.command(
    "export",
    cls=Documented,
    context_settings=CONTEXT,
    environment=LOADING,
    files=(
        (
            systemd_unit,
            "The systemd unit that runs this command (from a wheel: a copy to install).",
        ),
        (rules_file, "Prometheus recording and alerting rules, for its rule_files."),
        (lambda: DEFAULT_DIR, "The program cache: what a start compiled, for the next start."),
    ),
)
@click.option(
    "--web.listen-address",
    "address",
    default="127.0.0.1:9977",
    show_default=True,
    help="HOST:PORT to listen on (loopback by default).",
)
@click.option(
    "--web.telemetry-path",
    "telemetry_path",
    default="/metrics",
    show_default=True,
    help="Path under which to serve the metrics.",
)
@click.option(
    "--web.config.file",
    "web_config",
    type=click.Path(dir_okay=False),
    help="TLS and basic auth, in the Prometheus exporter-toolkit format; re-read on SIGHUP.",
)
@click.option(
    "--probe",
    "include",
    multiple=True,
    metavar="NAME[.FEATURE]",
    shell_complete=complete_probes,
    help="Only this probe (repeat); NAME.FEATURE also turns on one of its features, "
    "NAME.all every one, *.all every probe's (`pyprobe list` shows them and their cost). "
    "Default: every probe, with the features that cost nothing measurable.",
)
@click.option(
    "--no-probe",
    "exclude",
    multiple=True,
    shell_complete=complete_probes,
    help="Not this probe (repeat).",
)
@click.option("--strict", is_flag=True, help="A probe that cannot attach is fatal.")
@click.option(
    "--label-cap",
    "label_caps",
    multiple=True,
    metavar="LABEL=N",
    help="Keep at most N values of LABEL per metric; the rest fold into "
    '"other" (repeat; defaults: netns 100, device 200, reason 200, others 500).',
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    type=click.Choice(LABELS),
    help="Series by the socket's cgroup too, where a probe can say it (tcpstates, drops, "
    "tcpretrans): cgroup adds labels cgroup, container and pod; pod adds only pod (a "
    "pod's containers summed). Off by default: a series per container and state pair "
    "or drop reason (capped: --label-cap cgroup=N).",
)
@click.option(
    "--drop-privileges",
    metavar="USER",
    help="Once attached, become USER with no capabilities left (maps are read "
    "through descriptors already open). Other namespaces are then out of reach.",
)
@click.option(
    "--bpf-stats",
    is_flag=True,
    help="Count BPF run time per program while running (BPF_ENABLE_STATS; off again on exit).",
)
@host_path_options
@click.option(
    "--log.level",
    "log_level",
    default="info",
    type=click.Choice(list(LEVELS)),
    show_default=True,
    help="Only log lines at this level and above.",
)
@click.option(
    "--log.format",
    "log_format",
    default="logfmt",
    type=click.Choice(list(FORMATS)),
    show_default=True,
    help="Log lines as logfmt (ts=... level=info msg=...) or one JSON object each.",
)
def export_cmd(
    address: str,
    telemetry_path: str,
    web_config: str | None,
    include: tuple[str, ...],
    exclude: tuple[str, ...],
    strict: bool,
    label_caps: tuple[str, ...],
    labels: tuple[str, ...],
    drop_privileges: str | None,
    bpf_stats: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Serve every probe as Prometheus metrics (a long-lived daemon).

    \b
    Order of start-up: the config is validated and the port bound before any
    BPF program is loaded. Maps are read at scrape time. A probe this kernel
    cannot run is reported (pyprobe_probe_attached 0) and the rest serve,
    unless --strict. SIGHUP re-reads --web.config.file (a bad one keeps the
    old); SIGTERM/SIGINT detach everything and exit 0.

    \b
    In a container, with the host's trees mounted at other paths:
      pyprobe export --path.procfs /host/proc --path.sysfs /host/sys --path.rootfs /host
    (`pyprobe doctor` with the same flags says what the container lacks).

    \b
    Examples:
      pyprobe export                                  # 127.0.0.1:9977/metrics
      pyprobe export --web.listen-address 0.0.0.0:9977 --web.config.file /etc/pyprobe/web.yml
      pyprobe export --probe drops --probe tcpstates --label cgroup
      pyprobe export --no-probe softirqs --bpf-stats --log.format json
    """
    setup_logging(log_level, log_format)
    opts = Options(
        address,
        web_config,
        include,
        exclude,
        strict,
        bpf_stats,
        parse_caps(label_caps),
        drop_privileges,
        telemetry_path,
        labels,
    )
    ctx = context()
    try:
        run(opts, ctx.env(), ctx.registry, ctx.loader)
    except (Terminated, KeyboardInterrupt):
        # SIGTERM or SIGINT before the daemon's own handlers are in place
        # (while the config is read, the port bound): as after, a clean stop
        # with nothing attached (run()'s clean-up has run), exit 0.
        sys.exit(0)


COMMANDS = (export_cmd,)
