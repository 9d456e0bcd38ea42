"""Show that each hardening test fails when the behaviour it guards is broken.

Each case breaks one thing in a scratch clone of HEAD (one text replacement),
runs the test that covers it, records how it failed, and restores the file.
Nothing in the working tree is touched. Not collected by pytest; run as root:

    .venv/bin/python tests/faults/break_on_purpose.py [CASE-PREFIX ...]

A case "holds" when its test fails with the breakage in place; the report
prints the first assertion line of each failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 120  # a broken range check can make a command run forever: that fails too


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    old: str
    new: str
    test: str


LEAK = 'globals().setdefault("_LEAK", []).append(b"x" * 400_000)\n'
COLLECT = "    def collect(self) -> Iterable[Metric]:\n        build ="
LEAKY_COLLECT = "    def collect(self) -> Iterable[Metric]:\n        " + LEAK + "        build ="
SETUID = (
    "        os.setuid(user.uid)\n    except OSError as e:\n"
    '        raise PyprobeError(f"--drop-privileges: cannot become {user.name}: {e.strerror}")'
    " from None\n    if effective_capabilities() != 0:"
)
F = "tests/faults/"

CASES = [
    Case("1 floods: losses not counted at reserve", "bpf/pyprobe_bpf.h", "(*l)++;", ";",
         F + "test_floods.py"),
    Case("2 map pressure: full-map inserts not counted", "bpf/pyprobe_bpf.h", "(*n)++;", ";",
         F + "test_map_pressure.py::test_a_full_map_counts_its_update_errors"),
    Case("2 map pressure: 400 KB kept per scrape", "pyprobe/exporter/collectors.py", COLLECT,
         LEAKY_COLLECT, F + "test_map_pressure.py::test_100k_live_sockets"),
    Case("3 cardinality: caps not applied", "pyprobe/exporter/caps.py",
         "if len(seen) >= self.cap(label):", "if False:", F + "test_cardinality.py"),
    Case("4 vanishing: stale keys never pruned", "pyprobe/core/series.py", "STALE_AFTER = 3 ",
         "STALE_AFTER = 10**9 ",
         F + "test_vanishing.py::test_devices_and_namespaces_deleted_while_probes_run"),
    Case("4 vanishing: namespaces keyed by inode, not cookie", "pyprobe/core/probe.py",
         "and netns_cookies():", "and False:",
         F + "test_vanishing.py::test_a_reused_namespace_inode_and_ifindex_start_from_zero"),
    Case("5 signals: no SIGTERM handler", "pyprobe/exporter/daemon.py",
         "(signal.SIGTERM, on_stop), ", "",
         F + "test_signals.py::test_20_sigterm_cycles_during_startup_and_serving"),
    Case("5 signals: a forked helper keeps the program fds", "pyprobe/exporter/daemon.py",
         "            # 4. serve\n",
         "            # 4. serve\n            if os.fork() == 0:\n"
         "                time.sleep(20)\n                os._exit(0)\n",
         F + "test_signals.py::test_sigkill_leaves_nothing_behind"),
    Case("5 signals: a bad config on SIGHUP not caught", "pyprobe/exporter/daemon.py",
         "webconfig.load(path)\n    except PyprobeError as e:",
         "webconfig.load(path)\n    except KeyError as e:",
         F + "test_signals.py::test_50_sighup_cycles_alternating_good_and_bad_configs"),
    Case("6 environment: tracefs not mounted again", "pyprobe/kernel/env.py",
         'rc = libc.mount(b"tracefs", str(target).encode(), b"tracefs", 0, None)', "rc = -1",
         F + "test_environment.py::test_tracefs_unmounted_is_mounted_again"),
    Case("7 privileges: uid kept, self-check gone", "pyprobe/exporter/privileges.py", SETUID,
         SETUID.replace("        os.setuid(user.uid)\n", "").replace(
             "if effective_capabilities() != 0:", "if False:"),
         F + "test_privileges.py::test_dropped_daemon_serves_exact_counters"),
    Case("7 privileges: no permission preflight", "pyprobe/load/program.py",
         "    if not env.can_load_bpf:\n", "    if False:\n",
         F + "test_privileges.py::test_a_user_without_cap_bpf_gets_one_line"),
    Case("8 hostile HTTP: no bound on worker threads", "pyprobe/exporter/server.py",
         "WORKERS = 4 ", "WORKERS = 100000 ",
         F + "test_hostile_http.py::test_idle_connections_and_parallel_scrapes"),
    Case("8 fuzz: a non-UTF-8 config not caught", "pyprobe/exporter/webconfig.py",
         "except UnicodeDecodeError as e:", "except ZeroDivisionError as e:",
         F + "test_fuzz.py::test_web_config_bytes"),
    Case("8 CLI: intervals not range-checked", "pyprobe/cli/common.py",
         "if not (self.minimum < n <= MAX_SECONDS or (self.minimum and n == self.minimum)):",
         "if False:", F + "test_cli_values.py"),
    Case("9 soak: 400 KB kept per scrape", "pyprobe/exporter/collectors.py", COLLECT,
         LEAKY_COLLECT, F + "test_soak.py"),
]  # fmt: skip


def run(case: Case, tree: Path) -> dict:
    target = tree / case.path
    text = target.read_text()
    if text.count(case.old) != 1:
        return {"case": case.name, "holds": None, "why": "the code to break has changed"}
    target.write_text(text.replace(case.old, case.new))
    start = time.monotonic()
    python = str(tree / ".venv/bin/python")
    argv = [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", case.test]
    try:
        proc = subprocess.run(argv, cwd=tree, capture_output=True, text=True, timeout=TIMEOUT)
        code, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        raw = e.stdout or b""
        partial = raw if isinstance(raw, str) else raw.decode(errors="replace")
        progress = (partial.strip().splitlines() or [""])[-1]
        code, out = -1, f"{partial}\nE {progress} then timed out after {TIMEOUT} s"
    finally:
        target.write_text(text)
    errors = [line for line in out.splitlines() if line.startswith("E ")]
    return {
        "case": case.name,
        "holds": code != 0,  # the test failed with the breakage in place
        "first_error": (errors or out.strip().splitlines()[-1:] or ["?"])[0][:200],
        "seconds": round(time.monotonic() - start),
    }


def main(prefixes: list[str]) -> int:
    cases = [c for c in CASES if not prefixes or any(c.name.startswith(p) for p in prefixes)]
    with tempfile.TemporaryDirectory(prefix="pyprobe-break-") as tmp:
        os.chmod(tmp, 0o755)  # the privilege tests run the tree's pyprobe as nobody
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(tree)], check=True)
        subprocess.run(["make", "-s", "setup"], cwd=tree, check=True, stdout=subprocess.DEVNULL)
        results = []
        for case in cases:
            results.append(run(case, tree))
            print(json.dumps(results[-1]), flush=True)
    return 0 if all(r["holds"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
