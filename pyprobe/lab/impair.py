"""The lab's impairments, made inside a host's namespace: random loss and
a firewall drop (a cls_bpf filter, bpf/lab_tc.bpf.c: no netem here), a
rate limit (tbf), and netem's delay where the kernel has netem."""

from __future__ import annotations

import contextlib

from ..errors import PyprobeError
from ..load.classifier import tc_program
from ..netns import rtnl
from ..netns.namespaces import NETNS_RUN_DIR, run_in_netns
from ..paths import bpf_dir

ETH_P_IP = 0x0800


def tc_drop(dev: str, prio: int, cflags: list[str]) -> None:
    """Inside a namespace: a cls_bpf direct-action filter on dev's ingress,
    dropping what bpf/lab_tc.bpf.c is compiled to drop."""
    with (
        rtnl.iproute() as ipr,
        tc_program(bpf_dir() / "lab_tc.bpf.c", "lab_filter", cflags) as (fd, name),
    ):
        idx = ipr.link_lookup(ifname=dev)[0]
        with contextlib.suppress(Exception):  # the ingress qdisc may be there already
            ipr.tc("add", "ingress", idx, "ffff:")
        ipr.tc(
            "add-filter",
            "bpf",
            idx,
            ":1",
            fd=fd,
            name=name,
            parent=0xFFFF0000,
            prio=prio,
            protocol=ETH_P_IP,
            classid=1,
            direct_action=True,
        )


def loss_filter(dev: str, pct: float) -> None:
    """Drop pct% of incoming IPv4 packets at random (netem's loss, without netem)."""
    # In a million, not a thousand: --loss 0.05 was rounded to no loss at all.
    tc_drop(dev, 10, [f"-DLOSS_PPM={round(pct * 10_000)}"])


def netem_delay(dev: str, ms: float) -> None:
    with rtnl.iproute() as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        try:
            ipr.tc("add", "netem", idx, "1:", delay=int(ms * 1000))
        except Exception as e:
            raise PyprobeError(
                f"--delay needs netem, which this kernel lacks ({e}); --loss and --rate work"
            ) from None


def check_rate(rate: str) -> None:
    """A rate tc takes (pyroute2 parses it as tc does), and not zero: before
    anything is built, not as a parser's exception once it is."""
    try:
        ok = rtnl.tc_rate(rate) > 0
    except (ValueError, KeyError):
        ok = False
    if not ok:
        units = ", ".join(rtnl.tc_rate_units())
        raise PyprobeError(
            f"--rate {rate!r}: a whole number above 0 and a unit ({units}), e.g. 10mbit"
        )


def tbf(dev: str, rate: str) -> None:
    with rtnl.iproute() as ipr:
        idx = ipr.link_lookup(ifname=dev)[0]
        try:
            ipr.tc("add", "tbf", idx, "1:", rate=rate, burst=16384, latency=200000)
        except Exception as e:
            raise PyprobeError(f"--rate {rate!r}: {e}") from None


def firewall(host: str, dev: str, udp_port: int, on: bool) -> None:
    """A rule on a host's ingress that drops UDP to udp_port (a firewall drop)."""

    def apply() -> None:
        if on:
            tc_drop(dev, 20, [f"-DDROP_UDP_PORT={udp_port}"])
            return
        with rtnl.iproute() as ipr:
            idx = ipr.link_lookup(ifname=dev)[0]
            ipr.tc("del-filter", "bpf", idx, parent=0xFFFF0000, prio=20, protocol=ETH_P_IP)

    run_in_netns(NETNS_RUN_DIR / host, apply)
