"""`make demo` / `pyprobe demo`: the lab, one workload after another, and what
each probe sees while it happens; then a summary. Bounded (about 20 s), no
input, and it removes every namespace and detaches every program it made.

  1. connection churn       -> TCP state changes, with owner and time in state
  2. a receiver that never reads -> Recv-Q growing (sock_diag), like `ss`
  3. connects to a closed port   -> drops (NO_SOCKET) and resets, per connection
  4. a firewall rule             -> drops with their reason and place
  5. a UDP flood into NAPI       -> interrupts vs polling: NAPI, softirqs, devices
  6. the VXLAN lab               -> the same packets on the overlay and the underlay
  7. the NAT lab                 -> a port forward and masquerade, as conntrack maps them
  8. one request across VXLAN    -> its packets hop by hop (pyprobe trace), in a lab of
                                    its own
"""

from __future__ import annotations

import fnmatch
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table

from ..core.attach import attach_together
from ..core.probe import Probe
from ..core.text import hostport
from ..kernel.env import KernelEnv
from ..load.program import BatchLoader
from ..netns import conntrack, rtnl
from ..netns.namespaces import NETNS_RUN_DIR, inode_of, run_in_netns
from ..netns.sockets import tcp_state_counts
from ..probes import Registry
from ..views import trace as trace_view
from ..views.tables import transitions_table
from ..views.top import TopView
from . import topology, traffic, workloads

SHOW = 10  # event lines per workload; the rest are counted
STREAMS = ("tcpstates", "drops", "tcpretrans")  # shown event by event


TSO = "tx-tcp*segmentation"  # every TSO flavour (their number grows with kernels)


def _features(dev: str, on: tuple[str, ...] = (), off: tuple[str, ...] = ()) -> None:
    """ethtool -K, through pyroute2, in the calling thread's namespace."""
    e = rtnl.ethtool()
    try:
        features = e.get_features(dev)
        for name in features.features:
            if any(fnmatch.fnmatch(name, p) for p in on):
                features.features[name].enable = True
            if any(fnmatch.fnmatch(name, p) for p in off):
                features.features[name].enable = False
        e.set_features(dev, features)
    finally:
        e.close()


class Demo:
    def __init__(
        self,
        env: KernelEnv,
        connections: int,
        console: Console,
        registry: Registry,
        loader: Callable[[], BatchLoader],
    ) -> None:
        self.env, self.n, self.console = env, connections, console
        self.registry, self.new_loader = registry, loader
        self.probes: dict[str, Probe] = {}
        self.names: dict[int, str] = {}

    def say(self, text: str) -> None:
        self.console.print(text)
        sys.stdout.flush()

    @contextmanager
    def section(self, title: str) -> Iterator[None]:
        for probe in self.probes.values():  # events of earlier sections stay there
            if probe.streaming:
                probe.events(timeout_ms=0)
        self.console.rule(f"[bold]{title}")
        start = time.monotonic()
        yield
        self.say(f"[dim]({time.monotonic() - start:.1f}s)[/]\n")

    def value(self, probe: str, metric: str, **labels: Any) -> float:
        return sum(
            r.get("value", r.get("count", 0))
            for r in self.probes[probe].rows()
            if r["metric"] == metric and all(str(r.get(k)) == str(v) for k, v in labels.items())
        )

    def ns(self, inode: int) -> str:
        return self.names.get(inode, str(inode))

    def run(self) -> dict[str, Any]:
        start = time.monotonic()
        summary: dict[str, Any] = {}
        with ExitStack() as stack:
            built = stack.enter_context(topology.Lab("veth"))
            h = workloads.Hosts.from_lab()
            h1, h2 = built.hosts["h1"], built.hosts["h2"]
            # veth delivers through its own NAPI when the receiver has GRO on
            # and the sender hands it no TSO packets (veth_skb_is_eligible_for_gro)
            run_in_netns(h.server, lambda: _features(h2["dev"], on=("rx-gro",)))
            run_in_netns(h.client, lambda: _features(h1["dev"], off=(TSO,)))
            self.names = {
                inode_of(h.client): "h1",
                inode_of(h.server): "h2",
            }
            self.say(
                f"[bold]pyprobe demo[/]: namespaces {h1['netns']} ({h1['addr']}) and "
                f"{h2['netns']} ({h2['addr']}) joined by a veth pair (`pyprobe lab up`)"
            )
            # Every probe loads as the exporter's do: from the program cache
            # `make setup` filled, or compiled two at a time in children; a
            # stream's ring buffer comes back as an fd.
            loader = self.new_loader()
            chosen: dict[str, Probe] = {}
            try:
                for name in self.registry.names():
                    probe = self.registry.create(name, env=self.env, loader=loader)
                    probe.netns_name = self.names.get  # h1, h2: the demo's own names
                    stack.enter_context(probe)
                    how, why = probe.runs_here(name in STREAMS)
                    if how is None:
                        self.say(f"  {name}: not available here ({why})")
                        continue
                    chosen[name] = probe
                # detached by the stack
                errors = attach_together(chosen, loader, streams=STREAMS)
            finally:
                loader.close()
            if errors:
                raise next(iter(errors.values()))
            self.probes.update(chosen)
            hooks = ", ".join(f"{n} ({p.hook_label.split(':')[0]})" for n, p in self.probes.items())
            self.say(f"attached in {time.monotonic() - start:.1f}s: {hooks}\n")
            view = TopView({n: p for n, p in self.probes.items() if not p.streaming})
            view.frame()
            for step in (self.churn, self.hoard, self.refused, self.firewall, self.flood):
                step(h, summary)
            self.console.rule("[bold]Everything, over the whole demo (pyprobe top)")
            self.console.print(view.frame())
            # the other topologies of the notes, one at a time
            topology.down()
            self.vxlan(summary)
            self.nat(summary)
            summary["lost"] = sum(p.lost() for p in self.probes.values())
        self.probes = {}  # detached with the veth lab
        self.traced(summary)  # in a lab of its own: the veth one is down now
        summary["left"] = [e.name for e in NETNS_RUN_DIR.glob(f"{topology.PREFIX}-*")]
        summary["seconds"] = time.monotonic() - start
        return summary

    # -- the workloads ---------------------------------------------------------------
    def churn(self, h: workloads.Hosts, summary: dict[str, Any]) -> None:
        with self.section(f"1. {self.n} connections: every TCP state change (pyprobe tcpstates)"):
            tcp = self.probes["tcpstates"]
            before = dict(tcp.transitions())  # type: ignore[attr-defined]
            self.say(workloads.churn(h, self.n))
            time.sleep(0.2)
            print(tcp.header())
            shown = 0
            for ev in tcp.events(timeout_ms=100):
                if ev["netns"] in self.names and shown < SHOW:
                    print(tcp.line(ev))
                    shown += 1
            after = tcp.transitions()  # type: ignore[attr-defined]
            delta = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
            self.console.print(transitions_table(delta, after, "State changes during the churn"))
            live = tcp_state_counts(h.client)
            self.say(
                f"h1 now holds {live.get('TIME_WAIT', 0)} sockets in TIME_WAIT "
                "(the side that closes first waits 60 s)"
            )
            summary["time_wait"] = live.get("TIME_WAIT", 0)

    def hoard(self, h: workloads.Hosts, summary: dict[str, Any]) -> None:
        with self.section("2. A receiver that never reads: Recv-Q grows (pyprobe queues)"):
            queues = self.probes["queues"]
            port = workloads.PORTS["hoard"]
            table = Table(
                title=f"Both ends of the connection to :{port}, as sock_diag (and ss) see them",
                title_justify="left",
            )
            for col in ("SENT", "HOST", "LOCAL", "RECV-Q", "SEND-Q"):
                table.add_column(col, justify="left" if col in ("HOST", "LOCAL") else "right")
            sink = traffic.Listener(h.server, h.server_addr, port, read=False)
            conn = None
            try:
                sent = 0
                for chunk in (20_000, 60_000, 120_000):
                    if conn is None:
                        conn = traffic.send_bytes(h.client, h.server_addr, port, chunk, close=False)
                    else:
                        conn.sendall(b"h" * chunk)
                    sent += chunk
                    time.sleep(0.3)
                    found = queues.top(20, owners=False)["sockets"]  # type: ignore[attr-defined]
                    ends = [s for s in found if f":{port}" in (s["local"][-5:], s["peer"][-5:])]
                    for s in sorted(ends, key=lambda s: self.ns(s["netns"])):
                        host = self.ns(s["netns"])
                        table.add_row(
                            str(sent), host, s["local"], str(s["recv_q"]), str(s["send_q"])
                        )
                        if host == "h2":
                            summary["recv_q"] = s["recv_q"]
            finally:
                if conn is not None:
                    conn.close()
                sink.stop()
            self.console.print(table)
            self.say(
                "h2's Recv-Q holds what nobody read, up to its receive buffer; the rest waits "
                "in h1's Send-Q, unacknowledged — what `ss -tn` shows."
            )

    def refused(self, h: workloads.Hosts, summary: dict[str, Any]) -> None:
        n = max(1, self.n // 4)
        with self.section(f"3. {n} connects to a closed port: drops and resets (pyprobe conn)"):
            self.say(workloads.refused(h, n))
            time.sleep(0.1)
            drops = [
                e
                for e in self.probes["drops"].events(timeout_ms=100)
                if e["netns"] in self.names and e["reason"] == "NO_SOCKET"
            ]
            resets = Counter(
                e["kind"]
                for e in self.probes["tcpretrans"].events(timeout_ms=50)
                if e["netns"] in self.names
            )
            for e in drops[:5]:
                self.say(
                    f"  drop {e['reason']:<10} at {e['location']:<24} in {self.ns(e['netns'])}: "
                    f"{hostport(e['saddr'], e['sport'])} -> {hostport(e['daddr'], e['dport'])}"
                )
            self.say(
                f"{len(drops)} packets dropped with NO_SOCKET (each SYN), "
                f"{resets['reset_sent']} resets sent by h2, "
                f"{resets['reset_received']} received by h1's connecting sockets"
            )
            summary["no_socket"] = len(drops)

    def firewall(self, h: workloads.Hosts, summary: dict[str, Any]) -> None:
        with self.section(
            "4. A firewall rule drops UDP: the drop, its reason and place (pyprobe drops)"
        ):
            self.say(workloads.firewall(h, 50))
            time.sleep(0.1)
            events = [
                e
                for e in self.probes["drops"].events(timeout_ms=100)
                if e["netns"] in self.names and e["dport"] == workloads.PORTS["firewall"]
            ]
            where = Counter(
                (e["reason"], e["location"].partition("+")[0], e["device"]) for e in events
            )
            for (reason, location, dev), count in where.most_common():
                self.say(f"  {count} x {reason} in {location} on h2's {dev}")
            summary["firewall"] = len(events)

    def flood(self, h: workloads.Hosts, summary: dict[str, Any]) -> None:
        with self.section(
            "5. Interrupts vs polling: a UDP flood into h2 (pyprobe napi, softirqs, netdev)"
        ):
            before = {
                "polls": self.value("napi", "napi_polls_total", netns_name="pplab-h2"),
                "pkts": self.value("napi", "napi_packets_total", netns_name="pplab-h2"),
                "net_rx": self.value("softirqs", "softirqs_total", vector="NET_RX"),
                "rx": self.value("netdev", "netdev_receive_packets_total", netns_name="pplab-h2"),
            }
            sent = traffic.udp_blast(h.client, h.server_addr, 9999, 3000, size=200)
            time.sleep(0.2)
            polls = self.value("napi", "napi_polls_total", netns_name="pplab-h2") - before["polls"]
            pkts = self.value("napi", "napi_packets_total", netns_name="pplab-h2") - before["pkts"]
            net_rx = self.value("softirqs", "softirqs_total", vector="NET_RX") - before["net_rx"]
            rx = (
                self.value("netdev", "netdev_receive_packets_total", netns_name="pplab-h2")
                - before["rx"]
            )
            self.say(
                f"{sent} datagrams sent; h2's eth0 received {rx:.0f} packets in "
                f"{polls:.0f} NAPI polls ({pkts / polls if polls else 0:.1f} packets per poll); "
                f"NET_RX softirq ran {net_rx:.0f} times on the host"
            )
            self.say(
                "Each NAPI poll takes the packets waiting on the device: an idle CPU polls as "
                "soon as one lands (about 1 per poll); a busy one lets them pile up (many per "
                "poll, polls that use their whole budget)."
            )
            summary["napi_polls"], summary["napi_packets"] = polls, pkts

    def vxlan(self, summary: dict[str, Any]) -> None:
        with (
            self.section(
                "6. VXLAN: h1 and h2 on two bridges joined over UDP 4789 (pyprobe netdev)"
            ),
            topology.Lab("vxlan") as built,
        ):
            h1, h2 = built.hosts["h1"], built.hosts["h2"]

            def sent(ns: str, dev: str) -> float:
                return self.value(
                    "netdev", "netdev_transmit_packets_total", netns_name=ns, device=dev
                )

            where = (
                ("pplab-h1", "eth0"),
                ("pplab-sw1", f"vxlan{topology.VNI}"),
                ("pplab-sw1", "underlay"),
            )
            before = {w: sent(*w) for w in where}
            srv = traffic.Server(topology.ns_path("h2"), h2["addr"], 8080)
            try:
                done = traffic.churn(topology.ns_path("h1"), h2["addr"], 8080, 20)
            finally:
                srv.stop()
            moved = {w: sent(*w) - before[w] for w in where}
            self.say(
                f"{done} connections h1 -> h2 ({h1['addr']} -> {h2['addr']}, MTU 1450): h1's "
                f"eth0 sent {moved[where[0]]:.0f} packets; sw1 encapsulated "
                f"{moved[where[1]]:.0f} on vxlan{topology.VNI} (the overlay) and its underlay "
                f"sent {moved[where[2]]:.0f} packets to sw2 (10.231.3.0/30): each as a UDP "
                f"datagram to port 4789, and ARP for sw2's own address"
            )
            summary["vxlan"] = tuple(moved[w] for w in where)

    def nat(self, summary: dict[str, Any]) -> None:
        with (
            self.section(
                "7. NAT: a port forward and masquerade on router rt (pyprobe nat, conntrack)"
            ),
            topology.Lab("nat") as built,
        ):
            h1, h2 = built.hosts["h1"]["addr"], built.hosts["h2"]["addr"]
            inside = traffic.Server(topology.ns_path("h1"), h1, topology.NAT_INSIDE_PORT)
            outside = traffic.Server(topology.ns_path("h2"), h2, 9000)
            try:
                traffic.churn(
                    topology.ns_path("h2"), topology.NAT_ROUTER_WAN, topology.NAT_FORWARD_PORT, 3
                )
                traffic.churn(topology.ns_path("h1"), h2, 9000, 2)
            finally:
                inside.stop()
                outside.stop()
            mapped = run_in_netns(topology.ns_path("rt"), conntrack.connections)
            for c in mapped:
                self.say(
                    f"  {c['nat']:<5} {c['proto']} {hostport(c['orig_src'], c['orig_sport'])} -> "
                    f"{hostport(c['orig_dst'], c['orig_dport'])}  replies "
                    f"{hostport(c['reply_src'], c['reply_sport'])} -> "
                    f"{hostport(c['reply_dst'], c['reply_dport'])}"
                )
            entries = self.value("conntrack", "conntrack_entries", netns_name="pplab-rt")
            self.say(
                f"h2 reached h1:80 through rt:8080 (DNAT) and h1 reached h2 as rt's own "
                f"{topology.NAT_ROUTER_WAN} (masquerade): {len(mapped)} NAT mappings, "
                f"{entries:.0f} connections tracked in rt"
            )
            summary["nat"] = len(mapped)

    def traced(self, summary: dict[str, Any]) -> None:
        port = workloads.PORTS["traced"]
        title = f"8. One request across VXLAN, hop by hop (pyprobe trace 'tcp port {port}')"
        with self.section(title), topology.Lab("vxlan") as lab:
            h = workloads.Hosts.from_lab()
            self.say(
                f"h1 ({lab.hosts['h1']['addr']}) -> sw1's bridge -> vxlan42 over the underlay "
                f"-> sw2's bridge -> h2 ({lab.hosts['h2']['addr']}) (`pyprobe lab up vxlan`)"
            )
            # on demand: its own program, with the filter compiled in
            probe = self.registry.create("trace", env=self.env, loader=self.new_loader())
            how, why = probe.runs_here(stream=True)
            if how is None:
                self.say(f"  trace: not available here ({why})")
                return
            probe.configure(expression=f"tcp port {port}")
            try:
                probe.attach(stream=True)
            finally:
                probe.loader.close()  # type: ignore[union-attr]
            with probe:
                srv = traffic.Server(h.server, h.server_addr, port)
                try:
                    traffic.churn(h.client, h.server_addr, port, 1)
                finally:
                    srv.stop()
                time.sleep(0.2)
                tracker = trace_view.Tracker(trace_view.DeviceKinds(), idle=0)
                packets = tracker.feed(probe.events(timeout_ms=100)) + tracker.flush()
            request = [p for p in packets if "P" in p.headers().tcp_flags]
            for p in request[:1]:
                print("\n".join(trace_view.lines(p, 1)))
            self.say(
                f"{len(packets)} packets of that connection traced; its request shown: queued "
                "on h1's veth, bridged in sw1, encapsulated on the underlay, decapsulated at "
                "sw2's vxlan42, bridged to h2, read by the server"
            )
            summary["traced"] = len(packets)


def run(
    env: KernelEnv, connections: int, registry: Registry, loader: Callable[[], BatchLoader]
) -> None:
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 120  # piped or logged: event lines stay on one line
    summary = Demo(env, connections, console, registry, loader).run()
    console.rule("[bold]Summary")
    console.print(
        f"TIME_WAIT on h1: {summary['time_wait']} · "
        f"Recv-Q of the non-reader: {summary['recv_q']} B · "
        f"NO_SOCKET drops: {summary['no_socket']} · firewall drops: {summary['firewall']} · "
        f"NAPI: {summary['napi_packets']:.0f} packets in {summary['napi_polls']:.0f} polls · "
        f"VXLAN: {summary['vxlan'][0]:.0f} sent by h1, {summary['vxlan'][1]:.0f} encapsulated, "
        f"{summary['vxlan'][2]:.0f} on the underlay · NAT mappings: {summary['nat']} · "
        f"traced packets: {summary.get('traced', 0)} · "
        f"lost events: {summary['lost']}"
    )
    left = summary["left"]
    console.print(
        f"{'namespaces left: ' + ', '.join(left) if left else 'namespaces removed'}, "
        f"programs detached · {summary['seconds']:.1f}s"
    )
