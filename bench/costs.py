"""What each probe and feature costs, from a run's ns/run pass of the arm
with every probe and feature on: for each, the runs per second of its
programs under the bench's workloads (churn and small UDP, both CPUs busy),
their ns per run, and the share of the CPUs that is. Written beside the
manifests (probes/measured-costs.json), where `pyprobe list` and `pyprobe
doctor` read it, so users choose features with numbers.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from pyprobe.paths import probes_dir
from pyprobe.probes import default

EVERY = "pyprobe exporter, every probe and feature"
FILE = "measured-costs.json"


def features_of() -> dict[tuple[str, str], str]:
    """(probe, program function) -> the feature it serves ("": the probe's
    default hooks)."""
    out: dict[tuple[str, str], str] = {}
    for name, manifest in default().manifests.items():
        for hook in manifest.hooks:
            for point in hook.points:
                out.setdefault((name, point.function), point.feature)
    return out


def costs(results: dict) -> dict:
    arm = results["arms"].get(EVERY, {})
    ncpu = int(results["machine"]["cpus"])
    which = features_of()
    found: dict[str, dict[str, dict[str, float]]] = {}
    for program, samples in arm.get("programs", {}).items():
        probe, _, function = program.partition(": ")
        if (probe, function) not in which:
            continue  # not one of the manifests' (a helper of the floor's, say)
        feature = which[(probe, function)]
        ns = statistics.median(s[0] for s in samples)
        runs = statistics.median(s[1] for s in samples)
        entry = found.setdefault(probe, {}).setdefault(
            feature, {"runs_per_s": 0.0, "ns_per_s": 0.0}
        )
        entry["runs_per_s"] += runs
        entry["ns_per_s"] += ns * runs
    for per_feature in found.values():
        for entry in per_feature.values():
            entry["ns_per_run"] = (
                entry["ns_per_s"] / entry["runs_per_s"] if entry["runs_per_s"] else 0
            )
            entry["cpu_percent"] = 100 * entry.pop("ns_per_s") / (ncpu * 1e9)
    fine = results.get("fine", {})
    return {
        "measured": results["date"],
        "machine": f"{results['machine']['cpus']} × {results['machine']['cpu']}, "
        f"kernel {results['machine']['kernel']}",
        "load": "connection churn and small UDP on every CPU (make bench)",
        "exporter_default": {
            w: fine.get("default", {}).get(w, {}).get("ratio") for w in fine.get("default", {})
        },
        "probes": found,
    }


def write(results: dict, where: Path | None = None) -> Path:
    path = (where or probes_dir()) / FILE
    path.write_text(json.dumps(costs(results), indent=1, sort_keys=True) + "\n")
    return path
