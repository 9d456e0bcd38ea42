"""Write dashboards/pyprobe-overview.json and dashboards/rules/pyprobe.rules.yml:
the dashboard the probes' manifests describe (pyprobe/views/dashboard.py;
`pyprobe dashboard` prints the same JSON from an install) and the rules
dashboards/rules/config.yml describes (pyprobe/views/rules.py; `pyprobe
rules`)."""

from __future__ import annotations

import sys
from pathlib import Path

from pyprobe.probes import default
from pyprobe.views import rules
from pyprobe.views.dashboard import render

HERE = Path(__file__).parent
OUT = HERE / "pyprobe-overview.json"
RULES = HERE / "rules" / "pyprobe.rules.yml"
CONFIG = HERE / "rules" / "config.yml"

if __name__ == "__main__":
    OUT.write_text(render(default()))
    RULES.write_text(rules.render(rules.load_config(CONFIG.read_text(), str(CONFIG))))
    print(f"wrote {OUT} and {RULES}", file=sys.stderr)
