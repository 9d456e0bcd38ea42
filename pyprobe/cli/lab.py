"""`pyprobe lab`: namespaces wired like the notes, and bounded traffic."""

from __future__ import annotations

import sys

import click

from ..core.text import json_line
from ..lab import topology as topo
from ..lab.workloads import WORKLOADS, Hosts
from ..load.cache import PROGRAM_CACHE_ENV
from .common import CONTEXT, Documented, json_option


@click.group(context_settings=CONTEXT)
def lab() -> None:
    """Network namespaces wired like the notes: veth, bridge, VXLAN; bounded traffic.

    \b
    Built with netlink (pyroute2) on 10.231.0.0/16 addresses that route
    nowhere else; `pyprobe lab down` removes every namespace it made.
    """


@lab.command("up", cls=Documented, environment=(PROGRAM_CACHE_ENV,))
@click.option(
    "-t",
    "--topology",
    default="veth",
    show_default=True,
    type=click.Choice(topo.TOPOLOGIES),
    help="veth: h1-h2; bridge: h1,h2,h3 on br0; vxlan: two bridges joined over VXLAN "
    "42/4789; nat: h1 behind router rt (masquerade, port 8080 forwarded to h1:80) from h2.",
)
@click.option("--stp", is_flag=True, help="Spanning tree on the bridges.")
@click.option(
    "--loss",
    type=click.FloatRange(0, 100, max_open=True),
    default=0.0,
    help="Drop this % of h2's incoming packets (an eBPF tc filter).",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Delay h1's packets by this many ms (needs netem).",
)
@click.option("--rate", help="Limit h1's egress (tbf), e.g. 10mbit.")
def lab_up(topology: str, stp: bool, loss: float, delay: float, rate: str | None) -> None:
    """Bring a lab topology up."""
    built = topo.Lab(topology, stp=stp, loss=loss, delay_ms=delay, rate=rate).up()
    hosts = ", ".join(f"{h['netns']} {h['addr']}" for h in built.hosts.values())
    click.echo(f"lab up: {topology} — {hosts}")


@lab.command("down")
def lab_down() -> None:
    """Remove every lab namespace (and so every device in it)."""
    removed = topo.down()
    click.echo(f"lab down: removed {', '.join(removed) if removed else 'nothing'}")


@lab.command("status")
@json_option
def lab_status(as_json: bool) -> None:
    """What is up: namespaces, devices, addresses, bridges."""
    state, found = topo.active(), topo.status()
    if as_json:
        click.echo(json_line({"lab": state, "namespaces": found}))
        return
    if not found:
        click.echo("lab: nothing up")
        return
    if state:
        click.echo(
            f"lab: {state['topology']} (stp {'on' if state['stp'] else 'off'}, "
            f"loss {state['loss']}%, delay {state['delay_ms']} ms, rate {state['rate'] or '-'})"
        )
    for ns in found:
        for link in ns["links"]:
            if link["dev"] == "lo":
                continue
            master = f" master {link['master']}" if link["master"] else ""
            click.echo(
                f"  {ns['netns']:<12} {link['dev']:<10} {link['kind'] or '-':<7} "
                f"{link['state']:<5} {' '.join(link['addrs'])}{master}"
            )


@lab.command("traffic", cls=Documented, environment=(PROGRAM_CACHE_ENV,))
@click.argument(
    "workloads", nargs=-1, type=click.Choice(["churn", "bulk", "hoard", "refused", "firewall"])
)
@click.option("--connections", default=100, show_default=True, type=click.IntRange(1, 100000))
def lab_traffic(workloads: tuple[str, ...], connections: int) -> None:
    """Run bounded workloads from h1 to h2 (all of them by default)."""
    hosts = Hosts.from_lab()
    failed = 0
    for name in workloads or tuple(WORKLOADS):
        fn = WORKLOADS[name]
        kwargs = {"n": connections} if name in ("churn", "refused", "firewall") else {}
        try:
            click.echo(fn(hosts, **kwargs))
        except OSError as e:
            # The lab's own doing (--loss, --rate) or a lab taken down meanwhile:
            # say which workload and why, and run the others.
            failed += 1
            click.echo(f"{name}: failed: {e.strerror or e}", err=True)
    if failed:
        sys.exit(1)


COMMANDS = (lab,)
