"""`pyprobe export` as users run it: a real daemon, a real Prometheus scraping
it, every dashboard panel's and every rule's query run against that
Prometheus; security (loopback default, basic auth, TLS) and faults (port in
use, signals, a broken config on SIGHUP, a probe that cannot attach)."""

from __future__ import annotations

import gzip
import json
import os
import platform
import re
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from pyprobe.exporter.server import PROMETHEUS_HEADERS
from pyprobe.lab import traffic
from pyprobe.lab.pair import VethPair
from pyprobe.netns import namespaces
from pyprobe.probes import default
from pyprobe.views.dashboard import render
from tests.conftest import bpf_prog_count, quiet_prog_count, settled_prog_count
from tests.kernel.test_cli_kernel import PYPROBE
from tests.support import Exporter, free_port, get, ping_overflow, sample
from tests.tlstools import client_context, make_certs, s_client, said

pytestmark = [pytest.mark.root, pytest.mark.kernel]
ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "dashboards" / "pyprobe-overview.json"
RULES = ROOT / "dashboards" / "rules" / "pyprobe.rules.yml"


@pytest.fixture(scope="module")
def exporter():
    exp = Exporter("--bpf-stats", "--probe", "*.all")  # every panel has data
    yield exp
    code, took = exp.stop()
    assert code == 0 and took < 2, (code, took)


def test_promtool_finds_nothing_to_complain_about(exporter):
    status, text = get(exporter.url())
    assert status == 200
    check = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert check.returncode == 0 and check.stdout.strip() == check.stderr.strip() == "", (
        check.stdout + check.stderr
    )


def test_self_metrics(exporter):
    _, text = get(exporter.url())
    for probe in ("tcpstates", "drops", "softirqs", "napi", "netdev", "queues", "tcpretrans"):
        assert sample(text, "pyprobe_probe_attached", probe=probe) == 1
        assert sample(text, "pyprobe_scrape_collector_success", collector=probe) == 1
    assert sample(text, "pyprobe_build_info") == 1
    assert sample(text, "pyprobe_map_max_entries", probe="drops", map="drops") == 10240
    assert sample(text, "pyprobe_bpf_program_runs_total", probe="softirqs", program="on_entry") > 0
    assert sample(text, "pyprobe_config_last_reload_successful") == 1


def test_what_prometheus_asks_for_openmetrics_gzipped(exporter):
    req = urllib.request.Request(exporter.url(), headers=PROMETHEUS_HEADERS)
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert r.headers["Content-Encoding"] == "gzip"
        assert r.headers["Vary"] == "Accept-Encoding"
        packed = r.read()
    body = gzip.decompress(packed).decode()
    assert len(packed) * 4 < len(body)
    assert body.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert families["pyprobe_tcp_state_transitions"].type == "counter"
    assert families["pyprobe_tcp_queue_bytes"].type == "gaugehistogram"
    caps = {s.labels["map"]: s.value for s in families["pyprobe_map_max_entries"].samples}
    assert caps["drops"] == 10240
    _, text = get(exporter.url())  # the plain format, not compressed: the same families
    assert not text.endswith("# EOF\n")
    assert sample(text, "pyprobe_map_max_entries", probe="drops", map="drops") == 10240


def test_telemetry_path_moves_the_metrics():
    exp = Exporter("--probe", "softirqs", "--web.telemetry-path", "/pyprobe/metrics")
    try:
        assert any("/pyprobe/metrics probes=" in line for line in exp.log)
        status, text = get(exp.url("/pyprobe/metrics"))
        assert status == 200 and sample(text, "pyprobe_probe_attached", probe="softirqs") == 1
        assert get(exp.url("/metrics"))[0] == 404
        status, landing = get(exp.url("/"))
        assert status == 200 and 'href="/pyprobe/metrics"' in landing
    finally:
        assert exp.stop()[0] == 0
    run = subprocess.run(
        [PYPROBE, "export", "--web.telemetry-path", "metrics"], capture_output=True, text=True
    )
    assert run.returncode == 2 and run.stderr.count("\n") == 1, run.stderr
    assert "bad --web.telemetry-path 'metrics'" in run.stderr


# -- end to end, with a real Prometheus ------------------------------------------------
def prometheus_query(port: int, expr: str) -> dict:
    q = urllib.parse.urlencode({"query": expr})
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/query?{q}", timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        try:
            return json.loads(body)
        except ValueError:  # "Service Unavailable" while its storage starts
            return {"status": "error", "error": f"{e.code} {body[:80]!r}"}


def drive(pair: VethPair) -> None:
    """Something for every panel: connections, refusals (resets, drops), loss
    (retransmits), a NAPI veth, a non-reading receiver, a socket overflow."""
    subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            pair.b,
            "sh",
            "-c",
            f"ethtool -K {pair.dev_b} gro on; "
            "nft add table inet loss; "
            "nft add chain inet loss in '{ type filter hook input priority 0; }'; "
            "nft add rule inet loss in tcp dport 7801 numgen random mod 100 lt 10 drop",
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["ip", "netns", "exec", pair.a, "ethtool", "-K", pair.dev_a, "tso", "off"],
        check=True,
        capture_output=True,
    )
    srv = traffic.Server(pair.path(pair.b), pair.addr_b, 7800)
    sink = traffic.Listener(pair.path(pair.b), pair.addr_b, 7801)
    try:
        traffic.churn(pair.path(pair.a), pair.addr_b, 7800, 50)
        traffic.refused(pair.path(pair.a), pair.addr_b, 9, 10)
        traffic.udp_blast(pair.path(pair.a), pair.addr_b, 9, 20)  # port unreachable
        traffic.send_bytes(pair.path(pair.a), pair.addr_b, 7801, 500_000)
        ping_overflow(pair.path(pair.a), 20, 0.05)
        # a bridge that learns an address (the fdb panels): an ARP request
        # from a veth whose peer is br's port
        subprocess.run(
            ["ip", "netns", "exec", pair.b, "sh", "-c",
             "ip link add tbr0 type bridge && ip link add tbp0 type veth peer name tbp1 && "
             "ip link set tbp0 master tbr0 && ip link set tbr0 up && ip link set tbp0 up && "
             "ip link set tbp1 up && ip addr add 10.233.0.2/24 dev tbp1 && "
             "ping -c1 -W1 10.233.0.9 || true"],
            check=True,
            capture_output=True,
        )  # fmt: skip
    finally:
        srv.stop()
        sink.stop()


def panel_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in (
                ("$__rate_interval", "30s"),
                ("$instance", ".*"),
                ("$netns", ".*"),
                ("$cgroup", ".*"),
                ("$pod", ".*"),
                ("$device", ".*"),
            ):
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


THRESHOLD = re.compile(r"\s*(==|!=|>=|<=|>|<)\s*[-+0-9.eE]+\s*$")


def rule_queries() -> list[tuple[str, str]]:
    """Every rule's expression; an alert's without its threshold (a healthy
    system fires none, but the series it compares must exist)."""
    out = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule["record"]
            out.append((name, THRESHOLD.sub("", rule["expr"].strip())))
    return out


def test_the_daemon_holds_descriptors_not_the_compiler(exporter):
    """bcc, clang and LLVM lived in the child that compiled and attached
    (load/compilers.py); the daemon has the programs by fd, and they count."""
    pid = exporter.proc.pid
    mapped = Path(f"/proc/{pid}/maps").read_text()
    assert not re.search(r"libbcc|libLLVM|libclang", mapped)
    assert Path(f"/proc/{pid}/task/{pid}/children").read_text().split() == []
    links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    assert links.count("anon_inode:bpf-prog") >= 7 and links.count("anon_inode:bpf-map") >= 7

    def transitions() -> float:
        text = get(exporter.url())[1]
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("pyprobe_tcp_state_transitions_total{")
        )

    before = transitions()
    with socket.create_server(("127.0.0.1", 0)) as server:
        socket.create_connection(server.getsockname()).close()
        server.accept()[0].close()
    assert transitions() >= before + 4  # SYN_SENT, ESTABLISHED on both ends, FIN_WAIT1...


def test_dashboard_json_is_what_build_py_builds():
    """The committed dashboard is what the manifests describe (as
    dashboards/build.py and `pyprobe dashboard` write it): not stale."""
    assert render(default()) == DASHBOARD.read_text()


def test_rules_pass_promtool():
    check = subprocess.run(
        ["promtool", "check", "rules", str(RULES)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_every_panel_and_rule_query_returns_series_from_a_real_prometheus(exporter, tmp_path):
    prom_port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "pyprobe", "static_configs": [{"targets": [f"127.0.0.1:{exporter.port}"]}]}
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with VethPair(prefix=f"pe{os.getpid() % 10000}", net=14) as pair:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # Prometheus up and scraping
                assert prom.poll() is None, prom.stderr.read()
                try:
                    r = prometheus_query(prom_port, 'up{job="pyprobe"}')
                except urllib.error.URLError:
                    r = {}  # not listening yet
                if r.get("data", {}).get("result"):
                    break
                time.sleep(0.5)
            drive(pair)
            time.sleep(1.5)
            drive(pair)  # twice: rates need two samples that differ
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                r = prometheus_query(prom_port, 'count_over_time(up{job="pyprobe"}[1m])')
                if float(r["data"]["result"][0]["value"][1]) >= 6:
                    break
                time.sleep(0.5)
            assert (
                prometheus_query(prom_port, 'up{job="pyprobe"}')["data"]["result"][0]["value"][1]
                == "1"
            )
            queries = panel_queries() + rule_queries()
            assert len(queries) >= 40
            # A rate() needs two samples of its series: one born in the second
            # round of traffic (a first retransmit, say) has them a scrape
            # later. Failing queries are asked again for a few seconds.
            errors: list[str] = []
            pending, deadline = queries, time.monotonic() + 10
            while True:
                missing = []
                for title, expr in pending:
                    r = prometheus_query(prom_port, expr)
                    if r.get("status") != "success":
                        errors.append(f"{title}: error {r.get('error')}: {expr}")
                    elif not r["data"]["result"]:
                        missing.append((title, expr))
                if errors or not missing or time.monotonic() > deadline:
                    break
                pending = missing
                time.sleep(1)
            failures = errors + [f"{title}: no series: {expr}" for title, expr in missing]
            assert not failures, "\n".join(failures)
    finally:
        prom.terminate()
        prom.wait(10)


# -- security ------------------------------------------------------------------------
def test_default_bind_is_loopback_only():
    with VethPair(prefix=f"pl{os.getpid() % 10000}", net=15) as pair:
        exp = Exporter(prefix=["ip", "netns", "exec", pair.a])
        # the default address, not ours: drop --web.listen-address from the command line
        exp.stop()
        exp = Exporter("--probe", "softirqs", prefix=["ip", "netns", "exec", pair.a])
        try:

            def local() -> int:
                return get(exp.url())[0]

            assert namespaces.run_in_netns(pair.path(pair.a), local) == 200

            def remote() -> str:
                try:
                    socket.create_connection((pair.addr_a, exp.port), timeout=3).close()
                    return "connected"
                except ConnectionRefusedError:
                    return "refused"

            assert namespaces.run_in_netns(pair.path(pair.b), remote) == "refused"
        finally:
            assert exp.stop()[0] == 0


def test_loopback_is_the_default_address():
    from click.testing import CliRunner

    from pyprobe.cli import cli

    help_text = CliRunner().invoke(cli, ["export", "--help"]).output
    assert "127.0.0.1:9977" in help_text


@pytest.fixture
def tls_files(tmp_path):
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp_path / "key.pem"),
            "-out",
            str(tmp_path / "cert.pem"),
        ],
        check=True,
        capture_output=True,
    )
    return tmp_path


def write_config(path: Path, tls: bool, users: dict[str, str]) -> Path:
    import bcrypt

    doc: dict = {
        "basic_auth_users": {
            u: bcrypt.hashpw(p.encode(), bcrypt.gensalt(4)).decode() for u, p in users.items()
        }
    }
    if tls:
        doc["tls_server_config"] = {"cert_file": "cert.pem", "key_file": "key.pem"}
    cfg = path / "web.yml"
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_basic_auth_and_tls(tls_files):
    cfg = write_config(tls_files, tls=True, users={"alice": "s3cret"})
    exp = Exporter("--probe", "softirqs", "--web.config.file", str(cfg))
    try:
        ctx = ssl.create_default_context(cafile=str(tls_files / "cert.pem"))
        url = exp.url(scheme="https")
        assert get(url, context=ctx)[0] == 401
        assert get(url, ("alice", "wrong"), ctx)[0] == 401
        assert get(url, ("mallory", "s3cret"), ctx)[0] == 401
        status, text = get(url, ("alice", "s3cret"), ctx)
        assert status == 200 and "pyprobe_softirqs_total" in text
        # A client willing to speak TLS 1.0-1.1 (security level 0), so that
        # only the server's minimum can refuse it; the same client is served
        # once it may use TLS 1.2.
        old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            get(url, ("alice", "s3cret"), old)
        old.maximum_version = ssl.TLSVersion.TLSv1_2
        assert get(url, ("alice", "s3cret"), old)[0] == 200
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError, http_error())):
            get(exp.url(), ("alice", "s3cret"))  # plain HTTP on the TLS port
    finally:
        assert exp.stop()[0] == 0


def test_the_reported_tls_settings_and_client_certificates_through_the_daemon(tmp_path):
    """The report: min/max_version TLS12 and one suite, and a client asking
    for ECDHE-RSA-CHACHA20-POLY1305 was served. And client certificates
    with an allowed SAN. (tests/unit/test_webconfig_tls.py has every key.)"""
    certs = make_certs(tmp_path)
    cfg = tmp_path / "web.yml"
    cfg.write_text(
        "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n"
        "  min_version: TLS12\n  max_version: TLS12\n"
        "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
        "  client_allowed_sans: [scraper.example]\n"
    )
    exp = Exporter("--probe", "softirqs", "--web.config.file", str(cfg))
    try:
        good = ("-cert", str(certs / "good.pem"), "-key", str(certs / "good.key"))
        out = s_client(exp.port, "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305", *good)
        assert "CONNECTION ESTABLISHED" not in out, out
        assert "CONNECTION ESTABLISHED" not in s_client(exp.port, "-tls1_3", *good)
        out = s_client(exp.port, *good)
        assert said(out, "Protocol version") == "TLSv1.2", out
        assert said(out, "Ciphersuite") == "ECDHE-RSA-AES128-GCM-SHA256", out
        url = exp.url(scheme="https")
        status, text = get(url, context=client_context(certs, "good"))
        assert status == 200 and "pyprobe_softirqs_total" in text
        for client in ("other", "rogue", None):  # SAN not allowed, CA unknown, none
            with pytest.raises((ssl.SSLError, OSError)):
                get(url, context=client_context(certs, client))
        assert exp.proc.poll() is None
    finally:
        assert exp.stop()[0] == 0


def test_own_process_metrics_and_json_logs():
    exec_at = time.time()
    exp = Exporter("--probe", "softirqs", "--log.format", "json", until='"msg":"start-up complete"')
    try:
        status, text = get(exp.url())
        assert status == 200
        assert sample(text, "process_cpu_seconds_total") > 0
        assert sample(text, "process_resident_memory_bytes") > 10e6
        fds = len(os.listdir(f"/proc/{exp.proc.pid}/fd"))
        assert abs(sample(text, "process_open_fds") - fds) <= 3  # the scrape's own sockets
        assert exec_at - 1 < sample(text, "process_start_time_seconds") < exec_at + 5
        assert sample(text, "python_info", version=platform.python_version()) == 1
    finally:
        assert exp.stop()[0] == 0
    deadline = time.monotonic() + 2  # the last lines, read on after exit
    while not any("every probe detached" in line for line in exp.log):
        assert time.monotonic() < deadline, exp.log
        time.sleep(0.05)
    # (a compiler's warnings may reach stderr too: the daemon's lines are the objects)
    assert not any(line.startswith("ts=") for line in exp.log)
    lines = [json.loads(line) for line in exp.log if line.startswith("{")]
    assert {line["level"] for line in lines} <= {"debug", "info", "warn", "error"}
    assert all(line["ts"].endswith("Z") and line["caller"] for line in lines)
    messages = [line["msg"] for line in lines]
    assert {"probe attached", "listening", "start-up complete"} <= set(messages), messages
    assert next(line for line in lines if line["msg"] == "probe attached")["probe"] == "softirqs"


def http_error():
    import http.client

    return http.client.HTTPException


# -- faults ----------------------------------------------------------------------------
def test_port_in_use_exits_2_before_any_program_loads():
    before = quiet_prog_count()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        start = time.monotonic()
        proc = subprocess.run(
            [PYPROBE, "export", "--web.listen-address", f"127.0.0.1:{port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        took = time.monotonic() - start
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "port in use" in lines[0], proc.stderr
    assert "probe attached" not in proc.stderr
    assert bpf_prog_count() == before
    assert took < 5  # nothing was compiled


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("tls_server_config: [", "not valid YAML"),
        ("basic_auth_users:\n  bob: plaintext\n", "expected a bcrypt hash"),
        (
            "tls_server_config:\n  cert_file: x.pem\n  key_file: y.pem\n  min_version: TLS11\n",
            "not allowed",
        ),
        ("no_such_key: 1\n", "unknown key"),
    ],
)
def test_bad_web_config_exits_2_with_one_line(tmp_path, content, words):
    cfg = tmp_path / "web.yml"
    cfg.write_text(content)
    proc = subprocess.run(
        [PYPROBE, "export", "--web.config.file", str(cfg), "--web.listen-address", "127.0.0.1:0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "web.yml" in lines[0], proc.stderr


def test_sigterm_and_sigint_exit_0_quickly_with_nothing_left():
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = quiet_prog_count()
        exp = Exporter()
        assert bpf_prog_count() > before
        code, took = exp.stop(sig)
        assert code == 0 and took < 2, (sig, code, took, "".join(exp.log))
        assert settled_prog_count(before) == before


def test_sighup_with_a_broken_config_keeps_serving_the_old_one(tls_files):
    cfg = write_config(tls_files, tls=False, users={"alice": "s3cret"})
    exp = Exporter("--probe", "softirqs", "--web.config.file", str(cfg))
    try:
        assert get(exp.url(), ("alice", "s3cret"))[0] == 200
        cfg.write_text("basic_auth_users: [not, a, mapping")
        exp.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        status, text = get(exp.url(), ("alice", "s3cret"))
        assert status == 200
        assert sample(text, "pyprobe_config_last_reload_successful") == 0
        write_config(tls_files, tls=False, users={"bob": "hunter2"})
        exp.proc.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert get(exp.url(), ("alice", "s3cret"))[0] == 401
        status, text = get(exp.url(), ("bob", "hunter2"))
        assert status == 200 and sample(text, "pyprobe_config_last_reload_successful") == 1
        assert exp.proc.poll() is None
    finally:
        assert exp.stop()[0] == 0


NAPI_OFF = {"PYPROBE_DISABLE_HOOKS": "raw_tracepoint:napi_poll,tracepoint:napi:napi_poll"}


def test_a_probe_that_cannot_attach_is_reported_and_the_rest_serve():
    exp = Exporter("--probe", "napi", "--probe", "softirqs", env=NAPI_OFF)
    try:
        status, text = get(exp.url())
        assert status == 200
        assert sample(text, "pyprobe_probe_attached", probe="napi", hook="") == 0
        assert sample(text, "pyprobe_probe_attached", probe="softirqs") == 1
        assert "pyprobe_softirqs_total{" in text and "pyprobe_napi_polls_total{" not in text
        assert any("probe=napi" in line and "not attached" in line for line in exp.log)
    finally:
        assert exp.stop()[0] == 0


def test_serves_from_the_first_attached_probe_while_the_rest_compile():
    """The program cache is off (as in every test): every program compiles,
    ~0.3-1 s each, two at a time. The first attached is served at once; the
    probes still compiling have no series until they attach."""
    every = len(default().names())  # the exporter's default: every probe
    exp = Exporter(until="msg=listening ")
    try:
        # (the log is read on: another probe may have attached since)
        at = next(i for i, ln in enumerate(exp.log) if "msg=listening " in ln)
        before = exp.log[:at]
        attached = [ln.split("probe=")[1].split()[0] for ln in before if "probe attached" in ln]
        assert attached and f"probes={len(attached)}/{every}" in exp.log[at], exp.log
        status, text = get(exp.url())
        assert status == 200
        first = attached[0]
        assert sample(text, "pyprobe_probe_attached", probe=first) == 1
        served = set(re.findall(r'^pyprobe_probe_attached\{[^}]*probe="(\w+)"', text, re.M))
        assert first in served and len(served) < every, served  # the rest: no series, not 0
        deadline = time.monotonic() + 30
        while not any("start-up complete" in line for line in exp.log):
            assert time.monotonic() < deadline and exp.proc.poll() is None, exp.log
            time.sleep(0.05)
        assert f"probes={every}/{every}" in next(
            line for line in exp.log if "start-up complete" in line
        )
        status, text = get(exp.url())
        served = set(re.findall(r'^pyprobe_probe_attached\{[^}]*probe="(\w+)"', text, re.M))
        assert len(served) == every and all(
            sample(text, "pyprobe_probe_attached", probe=p) == 1 for p in served
        )
    finally:
        assert exp.stop()[0] == 0


def test_strict_makes_a_probe_that_cannot_attach_fatal():
    before = quiet_prog_count()
    proc = subprocess.run(
        [
            PYPROBE,
            "export",
            "--strict",
            "--probe",
            "softirqs",
            "--probe",
            "napi",
            "--web.listen-address",
            f"127.0.0.1:{free_port()}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **NAPI_OFF},
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("pyprobe: error: napi: no usable hook")
    assert settled_prog_count(before) == before
