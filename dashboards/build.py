"""Write dashboards/pyprobe-overview.json: the dashboard the probes'
manifests describe (pyprobe/views/dashboard.py builds it; `pyprobe
dashboard` prints the same JSON from an install)."""

from __future__ import annotations

import sys
from pathlib import Path

from pyprobe.probes import default
from pyprobe.views.dashboard import render

OUT = Path(__file__).with_name("pyprobe-overview.json")

if __name__ == "__main__":
    OUT.write_text(render(default()))
    print(f"wrote {OUT}", file=sys.stderr)
