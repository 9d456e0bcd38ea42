"""What each probe and feature cost in the last `make bench` run on this
kind of machine (probes/measured-costs.json, written by bench/costs.py):
`pyprobe list` and `pyprobe doctor` show it, so a feature is chosen with
its price in view."""

from __future__ import annotations

import functools
import json
from pathlib import Path

from ..paths import probes_dir

FILE = "measured-costs.json"


@functools.cache
def measured(directory: Path | None = None) -> dict:
    try:
        data = json.loads(((directory or probes_dir()) / FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def cost(probe: str, feature: str = "", directory: Path | None = None) -> str:
    """e.g. "0.41% CPU (52k runs/s x 79 ns)"; "" when not measured (a hook
    the bench's load never hit, or a probe the kernel's counters serve)."""
    entry = measured(directory).get("probes", {}).get(probe, {}).get(feature)
    if not entry or not entry.get("runs_per_s"):
        return ""
    runs = entry["runs_per_s"]
    shown = f"{runs / 1000:.0f}k" if runs >= 1000 else f"{runs:.0f}"
    return f"{entry['cpu_percent']:.2f}% CPU ({shown} runs/s x {entry['ns_per_run']:.0f} ns)"


def where() -> str:
    """Where and under what load the costs were measured."""
    data = measured()
    if not data:
        return ""
    return (
        f"measured {data.get('measured', '?')} on {data.get('machine', '?')}, "
        f"under {data.get('load', '?')}"
    )
