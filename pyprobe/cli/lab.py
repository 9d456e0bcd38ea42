"""`pyprobe lab`: namespaces wired like the notes, and bounded traffic."""

from __future__ import annotations

import sys
import time

import click

from ..core.text import json_line
from ..errors import PyprobeError
from ..lab import scenarios
from ..lab import topology as topo
from ..lab.workloads import WORKLOADS, Hosts
from ..load.cache import PROGRAM_CACHE_ENV
from ..netns import snapshot
from .common import CONTEXT, LOADING, Documented, attached_many, json_option


@click.group(context_settings=CONTEXT)
def lab() -> None:
    """Network namespaces wired like the notes: veth, bridge, VXLAN, NAT, TUN, TAP; bounded traffic.

    \b
    Built with netlink (pyroute2) on 10.231.0.0/16 addresses that route
    nowhere else; `pyprobe lab down` removes every namespace it made.

    \b
    Examples:
      pyprobe lab up -t bridge && pyprobe lab traffic churn && pyprobe lab down
      pyprobe lab scenario backlog
    """


@lab.command("up", cls=Documented, environment=(PROGRAM_CACHE_ENV,))
@click.option(
    "-t",
    "--topology",
    default="veth",
    show_default=True,
    type=click.Choice(topo.TOPOLOGIES),
    help="veth: h1-h2; bridge: h1,h2,h3 on br0; vxlan: two bridges joined over VXLAN "
    "42/4789; nat: h1 behind router rt (masquerade, port 8080 forwarded to h1:80) from h2; "
    "tun: a user-space UDP tunnel between h1's and h2's tun0; tap: the same at layer 2 "
    "between their tap0 (Ethernet frames, ARP included).",
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
    """Bring a lab topology up.

    \b
    Examples:
      pyprobe lab up                     # h1-h2 over a veth pair
      pyprobe lab up -t vxlan --loss 2   # two bridges over VXLAN, 2% loss into h2
      pyprobe lab up -t nat --delay 20 --rate 10mbit
      pyprobe lab up -t tap              # h1-h2 over tap0, frames relayed as UDP
    """
    built = topo.Lab(topology, stp=stp, loss=loss, delay_ms=delay, rate=rate).up()
    hosts = ", ".join(f"{h['netns']} {h['addr']}" for h in built.hosts.values())
    click.echo(f"lab up: {topology} — {hosts}")


@lab.command("down")
def lab_down() -> None:
    """Remove every lab namespace (and so every device in it), and put back
    the host's nf_conntrack_max should a scenario have left it lowered.

    \b
    Examples:
      pyprobe lab down
    """
    removed = topo.down()
    click.echo(f"lab down: removed {', '.join(removed) if removed else 'nothing'}")


@lab.command("status")
@json_option
def lab_status(as_json: bool) -> None:
    """What is up: namespaces, devices, addresses, bridges.

    \b
    Examples:
      pyprobe lab status
      pyprobe lab status -j | jq .
    """
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
    """Run bounded workloads from h1 to h2 (all of them by default).

    \b
    Examples:
      pyprobe lab traffic                # every workload
      pyprobe lab traffic churn refused --connections 500
    """
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


def run_scenario(name: str) -> tuple[str | None, scenarios.Evidence]:
    """A scenario's verdict and the evidence it was reached from: its probes
    attached first, then its lab built, broken and driven, then taken down
    (whatever happens on the way)."""
    scenario = scenarios.SCENARIOS[name]
    if topo.active() is not None:
        raise PyprobeError("a lab is already up: `pyprobe lab down` first")
    chosen = {probe: frozenset(features) for probe, features in scenario.probes.items()}
    with attached_many(chosen, streams=scenario.streams) as probes:
        try:
            topo.Lab(scenario.topology, stp=scenario.stp).up()
            scenario.breaks()
            scenario.drive()
            time.sleep(0.2)  # the last packets through the softirq
            snapshot.expire()  # the kernel's counters as they are now, not a pass shared before
            evidence = scenarios.Evidence(
                rows={n: list(p.rows()) for n, p in probes.items()},
                events={n: probes[n].events(timeout_ms=100) for n in scenario.streams},
            )
            return scenario.verdict(evidence), evidence
        finally:
            scenarios.cleanup()
            topo.down()


@lab.command("scenario", cls=Documented, environment=LOADING)
@click.argument("name", type=click.Choice(list(scenarios.names())))
@json_option
def lab_scenario(name: str, as_json: bool) -> None:
    """Build a failure from the notes, break it, and name its cause from what the probes saw.

    \b
    neighbour    h1 sends to an address nobody has on its link
    no-route     h1's route to its link deleted: connects fail
    closed-port  h1 connects to a port nobody listens on in h2
    backlog      a listener that never accepts (backlog 1) gets 8 SYNs
    enslaved-ip  an address left on a bridge's port: its neighbours never resolve
    stp-loop     a loop on a bridge: STP blocks one end
    vxlan-mtu    overlay MTU 1500 over a 1500 underlay, ICMP frag-needed dropped
    conntrack-full  rt's conntrack table full (the host's limit lowered to 64
                 for a second, put back): new flows dropped

    The verdict is one line built from the probes' series and events alone;
    exit 1 when they do not show the cause. The lab is removed at the end.

    \b
    Examples:
      pyprobe lab scenario closed-port
      pyprobe lab scenario stp-loop -j
    """
    verdict, _evidence = run_scenario(name)
    if as_json:
        print(json_line({"scenario": name, "verdict": verdict}))
    else:
        click.echo(f"{name}: {verdict or 'cause not found in what the probes saw'}")
    if verdict is None:
        sys.exit(1)


COMMANDS = (lab,)
