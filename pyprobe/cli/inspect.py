"""What pyprobe can do here: `list`, `doctor`, `compile`, `dashboard`, `rules`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..core.compile import compile_all
from ..core.costs import cost, where
from ..core.sizes import RINGBUF_PAGES_ENV
from ..errors import PyprobeError
from ..kernel.env import DISABLE_HOOKS_ENV
from ..load.compilers import CompilerLoader
from ..paths import dashboards_dir, rules_config, rules_file
from ..views import rules as rules_view
from ..views.dashboard import render
from .common import (
    CONTEXT,
    ENVIRONMENT,
    LOADING,
    Documented,
    complete_probes,
    context,
    host_path_options,
)
from .doctor import report


@click.command("list", cls=Documented, context_settings=CONTEXT, environment=(DISABLE_HOOKS_ENV,))
def list_probes() -> None:
    """The probes, one line each: name, hook it would use here, what it
    costs, what it shows; under each, its features (off unless asked for:
    export --probe NAME.FEATURE, or the command's --feature) with theirs.

    Costs: from the last `make bench` on this kind of machine, the share of
    the CPUs the programs took under connection churn and small UDP on every
    CPU ("-": not measured, or no hook: the kernel's own counters).

    \b
    Examples:
      pyprobe list                       # every probe and feature, one line each
      pyprobe list | grep unavailable    # what this kernel cannot run
    """
    ctx = context()
    env = ctx.env()
    rows = []
    for name in ctx.registry.names():
        probe = ctx.registry.create(name, env=env)
        how, _why = probe.runs_here()
        price = cost(name) if probe.needs_program() else "no hook"
        rows.append((name, how or "unavailable", price or "-", probe.manifest.summary))
        for f in probe.manifest.features:
            rows.append((f"  {name}.{f.name}", "(off)", f"+{cost(name, f.name) or '-'}", f.help))
    # Columns as wide as their widest entry (a hook with four targets is ~80
    # characters): the summaries line up, one greppable line per probe.
    widths = [max(len(r[k]) for r in rows) for k in range(3)]
    for row in rows:
        cells = [f"{cell:<{w}}" for cell, w in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[3]]))
    if where():
        click.echo(f"\ncosts {where()}")


@click.command(cls=Documented, context_settings=CONTEXT, environment=tuple(ENVIRONMENT))
@host_path_options
def doctor() -> None:
    """Check kernel, BTF, tracefs, headers, kprobes, capabilities, and every probe's hook.

    Each capability pyprobe lacks, with what it is needed for. Inside a
    container (podman's /run/.containerenv, docker's /.dockerenv, a runtime's
    cgroup, a pid, user or cgroup namespace not the host's), also whether it
    sees the host's processes (hostPID) and network namespace (hostNetwork),
    and for each missing piece the podman flag and the Kubernetes field that
    bring it in. Exits 0 when at least one probe can run here, 2 otherwise.

    \b
    Examples:
      pyprobe doctor
      pyprobe doctor --path.procfs /host/proc --path.sysfs /host/sys --path.rootfs /host
    """
    ctx = context()
    ok = report(ctx.env(), ctx.registry, click.echo)
    sys.exit(0 if ok else 2)


@click.command(
    "compile", cls=Documented, context_settings=CONTEXT, environment=(*LOADING, RINGBUF_PAGES_ENV)
)
@click.option(
    "--probe",
    "include",
    multiple=True,
    shell_complete=complete_probes,
    help="Only this probe (repeatable; default: every one).",
)
def compile_programs(include: tuple[str, ...]) -> None:
    """Compile the programs (the exporter's, the streams') into the program cache.

    Then the exporter's first start loads them (~0.6 s) instead of compiling
    (~2-3 s), and `pyprobe tcpstates` starts in ~0.6 s instead of ~1.4. The
    Debian package runs it at install; after a kernel upgrade, or an install
    from a wheel, run it again. Each missing one is loaded, attached and
    detached once: the kernel's verifier has passed it. Exits 1 when a probe
    failed to compile here.

    \b
    Examples:
      pyprobe compile                    # after a kernel upgrade
      pyprobe compile --probe drops --probe tcpstates
    """
    ctx = context()
    ctx.registry.check(include)
    on_demand = [n for n in include if ctx.registry.manifests[n].on_demand]
    if on_demand:
        raise PyprobeError(
            f"{on_demand[0]}: compiled by its own command, with what it is given (a filter): "
            "nothing to compile ahead"
        )
    names = list(include) or ctx.registry.names()
    env = ctx.env()

    def probes(loader: CompilerLoader) -> list:
        return [ctx.registry.create(n, env=env, loader=loader) for n in names]

    outcomes = compile_all(env, probes)
    width = max((len(o.probe) for o in outcomes), default=0)
    for o in outcomes:
        click.echo(f"{o.probe:<{width}} {o.status:<9} {o.detail}")
    sys.exit(1 if any(o.status == "failed" for o in outcomes) else 0)


@click.command(
    cls=Documented,
    context_settings=CONTEXT,
    files=(
        (lambda: dashboards_dir() / "pyprobe-overview.json", "This dashboard, as installed."),
        (
            lambda: dashboards_dir() / "provisioning",
            "Grafana's datasource and dashboard providers.",
        ),
        (rules_file, "Prometheus recording and alerting rules, for its rule_files."),
    ),
)
def dashboard() -> None:
    """Print the Grafana dashboard of these probes (JSON, to import or provision).

    \b
    Examples:
      pyprobe dashboard > pyprobe-overview.json
      pyprobe dashboard | jq '.panels | length'   # panels these probes make
    """
    click.echo(render(context().registry), nl=False)


@click.command(
    cls=Documented,
    context_settings=CONTEXT,
    files=(
        (rules_config, "The default config: copy it to tune the rules for a fleet."),
        (rules_file, "The rules this config makes, as installed."),
    ),
)
@click.option(
    "-c",
    "--config",
    "config",
    type=click.Path(exists=True, dir_okay=False),
    help="Selector, labels kept, rate window, and each alert's threshold, for: and "
    "severity (YAML; default: the installed config.yml).",
)
def rules(config: str | None) -> None:
    """Print Prometheus recording and alerting rules, generated from a config.

    Mixin-style: every series is read with the config's selector (job="pyprobe"),
    alerts keep its aggregate_by labels (cluster, job, instance), and each
    threshold, `for:` and severity is the config's. Every alert has a summary, a
    description and a runbook_url (docs/runbooks.md). The installed rules file
    is this command's output with the default config.

    \b
    Examples:
      pyprobe rules > pyprobe.rules.yml
      pyprobe rules --config fleet.yml > /etc/prometheus/rules/pyprobe.rules.yml
      pyprobe rules -c fleet.yml | promtool check rules /dev/stdin
    """
    path = Path(config) if config else rules_config()
    cfg = rules_view.load_config(path.read_text(), str(path))
    click.echo(rules_view.render(cfg), nl=False)


COMMANDS = (list_probes, doctor, compile_programs, dashboard, rules)
