"""tcpstates: the stream's filters and lines (bcc's tcpstates and tcplife
columns), and the summary: transitions counted in the kernel plus live
sockets per state and namespace (sock_diag)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ..core.probe import Probe, plugin
from ..core.series import PREFIX
from ..core.text import hostport, netns_cell
from ..errors import PyprobeError
from ..kernel.names import TCP_STATES
from ..load.program import LoadRequest
from ..netns import snapshot
from ..netns.namespaces import named_netns

CLOSE_ONLY = "-DFILTER_CLOSE"


@dataclass(frozen=True)
class Filters:
    """The stream's filters, compiled into the program as constants."""

    pid: int | None = None
    lports: tuple[int, ...] = ()
    dports: tuple[int, ...] = ()
    family: int | None = None
    netns: int | None = None
    close_only: bool = False  # tcplife: only the changes to CLOSE, with the totals

    def cflags(self) -> list[str]:
        flags = [CLOSE_ONLY] if self.close_only else []
        if self.pid is not None:
            flags.append(f"-DFILTER_PID={self.pid}")
        if self.family is not None:
            flags.append(f"-DFILTER_FAMILY={self.family}")
        if self.netns is not None:
            flags.append(f"-DFILTER_NETNS={self.netns}u")
        for macro, ports in (("LPORT_MATCH", self.lports), ("DPORT_MATCH", self.dports)):
            if ports:
                flags.append(f"-D{macro}(p)=(" + "||".join(f"(p)=={p}" for p in ports) + ")")
        return flags


def parse_ports(text: str | None) -> tuple[int, ...]:
    """ "80,443" -> (80, 443); anything else is a one-line error."""
    if not text:
        return ()
    ports = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or not 0 < int(part) < 65536:
            raise PyprobeError(
                f"bad port {part!r} in {text!r}: expected numbers 1-65535, comma-separated"
            )
        ports.append(int(part))
    return tuple(dict.fromkeys(ports))


HEADER = (
    f"{'SKADDR':<8} {'PID':>7} {'COMM':<12} {'NETNS':<12} {'LADDR:LPORT':<22} "
    f"{'RADDR:RPORT':<22} {'OLDSTATE':>11} -> {'NEWSTATE':<11} {'MS':>9}"
)
# `pyprobe tcplife`: bcc tcplife's columns, with the namespace
LIFE_HEADER = (
    f"{'PID':>7} {'COMM':<12} {'NETNS':<12} {'LADDR:LPORT':<22} {'RADDR:RPORT':<22} "
    f"{'TX_KB':>8} {'RX_KB':>8} {'MS':>10}"
)


def _comm(ev: Mapping[str, Any]) -> str:
    # A pid/comm that is a guess (softirq, owner never seen) is marked with '*'.
    return ev["comm"] + ("" if ev["owner_known"] else "*")


def state_line(ev: Mapping[str, Any]) -> str:
    ms = "-" if ev["ms"] is None else f"{ev['ms']:.3f}"
    return (
        f"{ev['skaddr'][-8:]:<8} {ev['pid']:>7} {_comm(ev)[:12]:<12} {netns_cell(ev)[:12]:<12} "
        f"{hostport(ev['saddr'], ev['sport']):<22} {hostport(ev['daddr'], ev['dport']):<22} "
        f"{ev['oldstate']:>11} -> {ev['newstate']:<11} {ms:>9}"
    )


def life_line(ev: Mapping[str, Any]) -> str:
    """A connection at its close: bytes acknowledged (TX) and received (RX)
    over its life, in KiB as tcplife shows them, and its age in ms ('-' when
    it was born before the probe started)."""
    tx, rx = ("-", "-") if ev["tx_bytes"] is None else (ev["tx_bytes"] >> 10, ev["rx_bytes"] >> 10)
    ms = "-" if ev["life_ms"] is None else f"{ev['life_ms']:.2f}"
    return (
        f"{ev['pid']:>7} {_comm(ev)[:12]:<12} {netns_cell(ev)[:12]:<12} "
        f"{hostport(ev['saddr'], ev['sport']):<22} {hostport(ev['daddr'], ev['dport']):<22} "
        f"{tx:>8} {rx:>8} {ms:>10}"
    )


@plugin("tcpstates")
class TcpStates(Probe):
    filters = Filters()
    STREAM_VARIANTS = {"tcplife": (CLOSE_ONLY,)}  # `pyprobe tcplife`: Filters(close_only=True)

    def attach(
        self, stream: bool = False, cflags: Sequence[str] = (), filters: Filters | None = None
    ) -> None:
        if filters is not None:
            self.filters = filters
        super().attach(stream=stream, cflags=cflags)

    def load_request(self, stream: bool = False, cflags: Sequence[str] = ()) -> LoadRequest:
        if self.filters.netns is not None:
            choice = self.available()
            if "OFF_NET_INUM" in choice.offsets.absent or choice.offsets.source == "none":
                raise PyprobeError(
                    "--netns needs the socket's namespace: no BTF or matching headers"
                )
        return super().load_request(stream=stream, cflags=[*self.filters.cflags(), *cflags])

    def header(self) -> str:
        return LIFE_HEADER if self.filters.close_only else HEADER

    def line(self, ev: Mapping[str, Any]) -> str:
        return life_line(ev) if self.filters.close_only else state_line(ev)

    def transitions(self) -> dict[tuple[str, str], int]:
        spec = next(m for m in self.manifest.metrics if m.map == "transitions")
        return {(old, new): int(v) for (old, new), v in self._series().samples(spec)}

    @staticmethod
    def live_sockets(netns: int | None = None) -> dict[int, dict[str, int]]:
        """inode -> {state: count}, like `netstat -n | awk` per namespace."""
        return snapshot.state_counts_by_netns(netns)

    def collect(self) -> Iterable[Metric]:
        yield from super().collect()
        names = named_netns()
        sockets = GaugeMetricFamily(
            PREFIX + "tcp_sockets",
            "Live TCP sockets by state and network namespace (sock_diag).",
            labels=["netns", "netns_name", "state"],
        )
        for inode, counts in self.live_sockets().items():
            for state in TCP_STATES.values():
                if state in counts:
                    sockets.add_metric([str(inode), names.get(inode, ""), state], counts[state])
        yield sockets
