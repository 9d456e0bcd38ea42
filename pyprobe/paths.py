"""Where pyprobe's files are: the BPF programs and probe manifests it runs,
and what an install hands to other programs (the Grafana dashboard and its
provisioning, the Prometheus rules, the exporter's systemd unit).

In a wheel they are package data, pyprobe/_data/X for the checkout's X
(pyproject's force-include table); in a source checkout or an editable
install they are the checkout's own. The Debian package keeps the
dashboards and the unit where Grafana users and systemd look
(/usr/share/pyprobe, /lib/systemd/system) and links them into _data, so
these functions name those places there.
"""

from pathlib import Path

_PKG = Path(__file__).resolve().parent

RULES = "pyprobe.rules.yml"
UNIT = "pyprobe-exporter.service"


def data_dir(name: str) -> Path:
    """The directory the checkout has at `name` (e.g. "dashboards/rules")."""
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            # Through the Debian package's links: the place a user finds it.
            return candidate.resolve()
    raise FileNotFoundError(f"pyprobe data directory {name!r} not found next to {_PKG}")


def bpf_dir() -> Path:
    return data_dir("bpf")


def probes_dir() -> Path:
    return data_dir("probes")


def dashboards_dir() -> Path:
    """pyprobe-overview.json and provisioning/ (Grafana's datasource and
    dashboard providers)."""
    return data_dir("dashboards")


def rules_file() -> Path:
    """Prometheus recording and alerting rules, for its rule_files."""
    return (data_dir("dashboards/rules") / RULES).resolve()


def rules_config() -> Path:
    """What the rules are generated from (`pyprobe rules --config`): the
    selector, the labels kept, thresholds and durations."""
    return (data_dir("dashboards/rules") / "config.yml").resolve()


def systemd_unit() -> Path:
    """The exporter's unit: the Debian package's (a link to the unit systemd
    reads), or a copy to install."""
    return (data_dir("contrib/systemd") / UNIT).resolve()
