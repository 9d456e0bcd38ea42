"""The deployed form for real: the DaemonSet's pod template (deploy/kubernetes/
daemonset.yaml) turned into a Pod and run by `podman kube play` from the image
`make image` builds, with the DaemonSet's privileges, mounts and limits;
a real Prometheus scraping it; two podman containers, each in its own network
namespace and cgroup, making TCP connections over their own loopback; and the
series Prometheus stored for each container equal to what the kernel counted
in that container's namespace. Then `podman kube down`, and nothing left: no
pod, container, volume or cgroup (the fixtures tear down on failure too)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pytest
import yaml

from pyprobe.netns import namespaces
from pyprobe.probes import default
from tests.deploy import podman as pm
from tests.deploy.conftest import measured
from tests.support import free_port, get

PREFIX = f"pyprobe-test-{os.getpid()}"
# What each container does (pm.TRAFFIC): connections accepted, connects
# refused, UDP datagrams sent to a full socket; and 2 MB sent with every
# LOSE-th full-sized segment dropped (retransmitted).
TRAFFIC = {"a": (23, 4, 40), "b": (37, 6, 70)}
LOSE = {"a": 7, "b": 5}
CAPS = ("BPF", "PERFMON", "SYSLOG", "SETUID", "SETGID")
CAP_BITS = {"SETGID": 6, "SETUID": 7, "SYSLOG": 34, "PERFMON": 38, "BPF": 39}
PROBES = len(default().names())  # every probe of this checkout, as the image has it


@pytest.fixture(scope="module")
def pods(tmp_path_factory, image):
    pods = pm.Pods(tmp_path_factory.mktemp("kube"))
    yield pods
    pods.close()


def play(pods: pm.Pods, image: str, known: set[str], name: str, **env: str) -> pm.PlayedPod:
    pod = pm.pod_from_daemonset(pm.daemonset(), name, image, free_port(), known, env or None)
    pods.play(pod)
    return pod


def exporter_pid(pod: pm.PlayedPod) -> int:
    return int(pm.podman("inspect", "--format", "{{.State.Pid}}", f"{pod.name}-exporter").stdout)


def logs(pod: pm.PlayedPod) -> str:
    return pm.podman("logs", f"{pod.name}-exporter", check=False).stderr


def wait_serving(pod: pm.PlayedPod, started: float, within: float = 60) -> float:
    """Seconds from `podman kube play` to the first /metrics answered."""
    deadline = started + within
    while time.monotonic() < deadline:
        try:
            if get(f"http://127.0.0.1:{pod.port}/metrics")[0] == 200:
                return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"the exporter never served:\n{logs(pod)}")


def startup_seconds(pod: pm.PlayedPod) -> float:
    """From the exporter container's start to its log's "start-up complete"."""
    started = pm.podman(
        "inspect", "--format", "{{.State.StartedAt.UnixNano}}", f"{pod.name}-exporter"
    ).stdout
    line = next(ln for ln in logs(pod).splitlines() if "start-up complete" in ln)
    stamp = re.search(r"ts=(\S+)Z", line)
    assert stamp, line
    done = datetime.fromisoformat(stamp.group(1)).replace(tzinfo=timezone.utc).timestamp()
    return done - int(started) / 1e9


def status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (ln.partition(":") for ln in text.splitlines())}


@pytest.fixture(scope="module")
def exporter(pods, image, export_options):
    start = time.monotonic()
    pod = play(pods, image, export_options, f"{PREFIX}-exporter")
    serving = wait_serving(pod, start)
    assert "start-up complete" in logs(pod)
    pid = exporter_pid(pod)
    rss = int(status(pid)["VmRSS"].split()[0]) * 1024
    measured(
        f"exporter in the DaemonSet's pod (program cache warm): start-up complete "
        f"{startup_seconds(pod):.2f} s after its container started, first /metrics "
        f"{serving:.2f} s after podman kube play; RSS {rss / 1e6:.0f} MB"
    )
    return pod


def test_the_daemonsets_pod_serves_metrics(exporter, tmp_path):
    code, text = get(f"http://127.0.0.1:{exporter.port}/metrics")
    assert code == 200
    attached = re.findall(r"^pyprobe_probe_attached\{.*\} (\S+)$", text, re.M)
    assert attached == ["1.0"] * PROBES, text
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f'msg="start-up complete" probes={PROBES}/{PROBES}' in logs(exporter)


def test_it_runs_with_the_privileges_the_daemonset_gives_it(exporter):
    st = status(exporter_pid(exporter))
    assert st["Uid"].split() == ["9977"] * 4  # pyprobe, after attaching as root
    assert int(st["CapEff"], 16) == int(st["CapPrm"], 16) == 0
    assert int(st["CapBnd"], 16) == sum(1 << CAP_BITS[c] for c in CAPS)
    assert st["NoNewPrivs"] == "1"  # allowPrivilegeEscalation: false
    assert st["Seccomp"] == "0"  # Unconfined (see the DaemonSet)
    ctr = f"{exporter.name}-exporter"
    touch = pm.podman("exec", ctr, "touch", "/probe", check=False)
    assert touch.returncode != 0 and "Read-only file system" in touch.stderr
    inspect = json.loads(pm.podman("inspect", ctr).stdout)[0]
    limit = exporter.manifest["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert inspect["HostConfig"]["Memory"] == int(limit.removesuffix("Mi")) << 20
    # The host's cgroup tree, where the exporter names containers, is mounted.
    seen = pm.podman("exec", ctr, "ls", "/host/sys/fs/cgroup").stdout.split()
    assert "unified" in seen or "cgroup.controllers" in seen


def test_kube_plays_args_are_the_daemonsets(exporter):
    """Every flag the DaemonSet passes reached the exporter (only the listen
    address is the test's): the image's pyprobe knows them all."""
    assert exporter.unknown_args == []
    cmdline = Path(f"/proc/{exporter_pid(exporter)}/cmdline").read_bytes().split(b"\0")
    passed = [a.decode() for a in cmdline if a.startswith(b"--")]
    (spec,) = [c for c in exporter.manifest["spec"]["containers"] if c["name"] == "exporter"]
    assert passed == spec["args"]
    assert "--path.sysfs=/host/sys" in passed and "--label=cgroup" in passed


# -- a real Prometheus, two containers, the kernel's counts ---------------------------------
def prom_query(port: int, expr: str) -> list[dict]:
    q = urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{q}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


class Prometheus:
    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s"},
            "scrape_configs": [{"job_name": "pyprobe", "static_configs": [{"targets": [target]}]}],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )

    def query(self, expr: str) -> list[dict]:
        return prom_query(self.port, expr)

    def scraped_after(self, moment: float, within: float = 30) -> None:
        """Wait for a scrape that began after `moment` (wall clock)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else ""
            try:
                up = self.query('timestamp(up{job="pyprobe"}) and up{job="pyprobe"} == 1')
            except (urllib.error.URLError, ConnectionError, AssertionError):
                up = []  # not listening, or its storage not ready yet
            if up and float(up[0]["value"][1]) > moment:
                return
            time.sleep(0.3)
        raise AssertionError(f"Prometheus scraped nothing after {moment}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def settled(workloads: dict[str, pm.Workload], within: float = 10) -> dict[str, dict]:
    """Each container's Tcp: and Udp: counters once they stopped moving
    (a retransmit can follow on a timer)."""
    deadline = time.monotonic() + within
    now = {k: {p: w.snmp(p) for p in ("Tcp", "Udp")} for k, w in workloads.items()}
    while time.monotonic() < deadline:
        time.sleep(0.3)
        again = {k: {p: w.snmp(p) for p in ("Tcp", "Udp")} for k, w in workloads.items()}
        if again == now:
            break
        now = again
    return now


@dataclass
class Scraped:
    prom: Prometheus
    workloads: dict[str, pm.Workload]
    kernel: dict[str, dict[str, int]]  # Tcp:
    udp: dict[str, dict[str, int]]  # Udp:
    netns: dict[str, set[str]]
    streams: dict[str, list[dict]]  # drops, tcpretrans; tcpstates filtered to a
    said: dict[str, str]


@pytest.fixture(scope="module")
def scraped(exporter, image, tmp_path_factory):
    """Prometheus scraping the pod's exporter; three streams from the image
    (drops and tcpretrans, tcpstates --container for container a); containers
    a and b made their traffic; their kernel's counts read; a scrape taken
    after that."""
    if shutil.which("prometheus") is None:
        pytest.fail("prometheus missing: run make setup")
    if shutil.which("nft") is None:
        pytest.fail("nft missing: run make setup")
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{exporter.port}")
    caps = exporter.manifest["spec"]["containers"][0]["securityContext"]["capabilities"]["add"]
    workloads: dict[str, pm.Workload] = {}
    streams: dict[str, pm.Stream] = {}
    try:
        prom.scraped_after(time.time())
        for key in TRAFFIC:
            workloads[key] = pm.start_workload(f"{PREFIX}-{key}", image)
            workloads[key].lose(pm.LOSSY, LOSE[key])
        start = time.monotonic()
        for probe, *args in (
            ("drops", "--stream"),
            ("tcpretrans", "--stream"),
            ("tcpstates", "--container", workloads["a"].id),
        ):
            name = f"{PREFIX}-stream-{probe}"
            streams[probe] = pm.start_stream(name, image, caps, probe, "-j", *args)
        measured(f"three streams started from the image in {time.monotonic() - start:.1f} s")
        threads = [
            threading.Thread(
                target=w.exec_python, args=(pm.TRAFFIC, *map(str, TRAFFIC[k]), str(pm.LOSSY))
            )
            for k, w in workloads.items()
        ]
        for t in threads:
            t.start()  # both at once: their events interleave on the CPUs
        for t in threads:
            t.join()
        counters = settled(workloads)
        done = time.time()
        events, said = {}, {}
        for probe in list(streams):
            events[probe], said[probe] = streams.pop(probe).stop()
        netns = {}
        for k, w in workloads.items():
            path = f"/proc/{w.pid}/ns/net"
            cookie = namespaces.run_in_netns(path, namespaces.netns_cookie) or 0
            netns[k] = {
                str(os.stat(path).st_ino),
                f"cookie:{cookie}",
                f"cookie:{cookie & 0xFFFFFFFF}",
            }
        prom.scraped_after(done)
        yield Scraped(
            prom,
            workloads,
            {k: c["Tcp"] for k, c in counters.items()},
            {k: c["Udp"] for k, c in counters.items()},
            netns,
            events,
            said,
        )
    finally:
        prom.stop()
        for stream in streams.values():
            pm.podman("rm", "-f", "-t", "0", stream.name, check=False)
        for w in workloads.values():
            pm.podman("rm", "-f", "-t", "0", w.name, check=False)


TRANSITIONS = {  # the kernel's Tcp: counter, and the state change it counts
    "ActiveOpens": ("CLOSE", "SYN_SENT"),
    "PassiveOpens": ("LISTEN", "SYN_RECV"),
    "AttemptFails": ("SYN_SENT", "CLOSE"),
}


def by(prom: Prometheus, label: str, metric: str, **match: str) -> dict[str, float]:
    """sum by (label) of metric{match}, from Prometheus."""
    selector = ",".join(f'{k}="{v}"' for k, v in match.items())
    result = prom.query(f"sum by ({label}) ({metric}{{{selector}}})")
    return {r["metric"].get(label, ""): float(r["value"][1]) for r in result}


def test_each_containers_namespace_counts_exactly_what_its_kernel_counted(scraped):
    """Per network namespace (the label the exporter gives every series it
    can place in one; a namespace born after the privileges were dropped is
    named by its cookie): each container's resets sent equal the kernel's
    OutRsts there, its resets received and its SYNs dropped for want of a
    socket equal the connects refused, which the kernel counts as
    AttemptFails."""
    prom, kernel, netns = scraped.prom, scraped.kernel, scraped.netns

    def mine(key: str, metric: str, **match: str) -> list[float]:
        return [v for ns, v in by(prom, "netns", metric, **match).items() if ns in netns[key]]

    for key, (n, refused, _) in TRAFFIC.items():
        # the traffic happened, and the kernel counted it in that namespace
        # (the connections, the refused ones, the lossy one)
        assert (kernel[key]["ActiveOpens"], kernel[key]["PassiveOpens"]) == (
            n + refused + 1,
            n + 1,
        )
        assert kernel[key]["AttemptFails"] == kernel[key]["OutRsts"] == refused
        assert mine(key, "pyprobe_tcp_resets_sent_total") == [kernel[key]["OutRsts"]], key
        assert mine(key, "pyprobe_tcp_resets_received_total", state="SYN_SENT") == [
            kernel[key]["AttemptFails"]
        ], key
        assert mine(key, "pyprobe_drops_total", reason="NO_SOCKET") == [kernel[key]["OutRsts"]], key


def test_each_container_is_attributed_exactly(scraped):
    """With --label cgroup (the DaemonSet's): the series of container
    podman:<id> count what the kernel counted in its namespace, and name its
    cgroup v2 path: state changes; datagrams dropped on its full socket and
    segments it retransmitted, both in softirq (the loopback's receive, the
    ACKs that trigger a fast retransmit) or on a timer, on behalf of whatever
    task the CPU was running."""
    prom, kernel, udp = scraped.prom, scraped.kernel, scraped.udp
    metric = "pyprobe_tcp_state_transitions_total"
    for key, w in scraped.workloads.items():
        container = f"podman:{w.short}"
        for counter, (old, new) in TRANSITIONS.items():
            counted = by(prom, "container", metric, old_state=old, new_state=new)
            assert counted.get(container) == kernel[key][counter], (key, counter, counted)
        paths = by(prom, "cgroup", metric, container=container)
        assert list(paths) == [w.cgroup_v2()], (key, paths)
        assert udp[key]["RcvbufErrors"] == TRAFFIC[key][2] - 1  # one fits in 1 KiB
        dropped = by(prom, "container", "pyprobe_drops_total", reason="SOCKET_RCVBUFF")
        assert dropped.get(container) == udp[key]["RcvbufErrors"], (key, dropped)
        assert kernel[key]["RetransSegs"] > 0
        resent = by(prom, "container", "pyprobe_tcp_retransmit_segments_total")
        assert resent.get(container) == kernel[key]["RetransSegs"], (key, resent)
    on = prom.query('count({job="pyprobe"})')[0]["value"][1]
    off = prom.query('count(sum without (cgroup, container, pod) ({job="pyprobe"}))')
    cgroups = prom.query('count(count by (cgroup) ({job="pyprobe", cgroup!=""}))')
    labelled = prom.query('count(count by (container) ({job="pyprobe", container!=""}))')
    measured(
        f"series scraped with --label cgroup: {on}; the same without the labels cgroup, "
        f"container, pod: {off[0]['value'][1]} (series of {cgroups[0]['value'][1]} cgroups, "
        f"{labelled[0]['value'][1]} of them containers)"
    )


def test_the_streams_name_each_container(scraped):
    """The same drops and retransmits, event by event, in `pyprobe drops
    --stream` and `pyprobe tcpretrans --stream` run from the image: each
    names its socket's container and cgroup. `pyprobe tcpstates --container
    A` shows container a's state changes, all of them, and nothing else (its
    lines carry the cgroup's id, which is container a's)."""
    kernel, udp, events = scraped.kernel, scraped.udp, scraped.streams
    for probe, said in scraped.said.items():
        assert "lost events: 0" in said, (probe, said)
    for key, w in scraped.workloads.items():
        container = f"podman:{w.short}"
        drops = [
            e
            for e in events["drops"]
            if e["reason"] == "SOCKET_RCVBUFF" and e["container"] == container
        ]
        assert len(drops) == udp[key]["RcvbufErrors"], key
        assert {(e["cgroup_path"], e["pod"]) for e in drops} == {(w.cgroup_v2(), "")}
        resent = [
            e
            for e in events["tcpretrans"]
            if e["kind"] == "retransmit" and e["container"] == container
        ]
        assert sum(e["segs"] for e in resent) == kernel[key]["RetransSegs"], key
        assert {e["dport"] for e in resent} == {pm.LOSSY}
    a = scraped.workloads["a"]
    states = events["tcpstates"]
    assert {e["cgroup"] for e in states} == {a.cgroup_id()}
    for counter, (old, new) in TRANSITIONS.items():
        seen = [e for e in states if (e["oldstate"], e["newstate"]) == (old, new)]
        assert len(seen) == kernel["a"][counter], counter


# -- the memory limit holds a cold start ------------------------------------------------------
def memcg_peak(pid: int) -> tuple[int, int]:
    """The peak memory of pid's cgroup (v1 memory controller, else v2's
    memory.peak) and how often it hit its limit or was OOM-killed."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            d = Path("/sys/fs/cgroup/memory") / path.lstrip("/")
            oom = re.search(r"oom_kill (\d+)", (d / "memory.oom_control").read_text())
            return int((d / "memory.max_usage_in_bytes").read_text()), int(
                oom.group(1) if oom else 0
            )
    (path,) = [
        ln[3:]
        for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if ln.startswith("0::")
    ]
    d = Path("/sys/fs/cgroup") / path.lstrip("/")
    events = dict(ln.split() for ln in (d / "memory.events").read_text().splitlines())
    return int((d / "memory.peak").read_text()), int(events["oom_kill"])


def test_a_cold_start_compiles_within_the_memory_limit(pods, image, export_options):
    """With no program cache (a node whose kernel the image was not warmed
    for), the exporter compiles every program, two compiler processes at a
    time, under the DaemonSet's memory limit: all attach, nothing is killed."""
    start = time.monotonic()
    pod = play(pods, image, export_options, f"{PREFIX}-cold", PYPROBE_PROGRAM_CACHE="off")
    pid = exporter_pid(pod)
    hwm: dict[str, int] = {}
    cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    procs_file = next(
        Path("/sys/fs/cgroup/unified") / ln[3:].lstrip("/") / "cgroup.procs"
        for ln in cgroup.splitlines()
        if ln.startswith("0::")
    )
    while "start-up complete" not in logs(pod) and time.monotonic() - start < 60:
        for p in procs_file.read_text().split():
            try:
                st = status(int(p))
            except OSError:
                continue
            kib = int(st.get("VmHWM", "0 kB").split()[0])
            who = "exporter" if int(p) == pid else "compiler"
            hwm[f"{who} {p}"] = max(hwm.get(f"{who} {p}", 0), kib)
    took = wait_serving(pod, start)
    assert f"probes={PROBES}/{PROBES}" in logs(pod), logs(pod)
    peak, oom_kills = memcg_peak(pid)
    limit = pod.manifest["spec"]["containers"][0]["resources"]["limits"]["memory"]
    assert oom_kills == 0
    assert peak < int(limit.removesuffix("Mi")) << 20
    compilers = sorted((v for k, v in hwm.items() if k.startswith("compiler")), reverse=True)
    measured(
        f"cold start (no program cache) in the pod: start-up complete "
        f"{startup_seconds(pod):.2f} s after its container started ({took:.1f} s after "
        f"podman kube play); the "
        f"container's memory peak {peak / 2**20:.0f} MiB (limit {limit}); VmHWM: exporter "
        f"{max((v for k, v in hwm.items() if k.startswith('exporter')), default=0) / 1024:.0f}"
        f" MiB, compilers {', '.join(f'{v / 1024:.0f}' for v in compilers[:4])} MiB"
    )
    pods.down(pod.name)


# -- and nothing left ---------------------------------------------------------------------------
def test_kube_down_leaves_nothing(pods, scraped):
    ids = list(pods.pod_ids.values())
    pods.close()
    for w in scraped.workloads.values():
        pm.podman("rm", "-f", "-t", "0", w.name)
        ids.append(w.id)
    assert pm.leftovers(PREFIX) == []
    assert [d for pod_id in ids for d in pm.cgroup_dirs(pod_id)] == []
    assert bool(pm.podman("images", "-q", pm.PAUSE).stdout.strip()) == pods.pause_existed
