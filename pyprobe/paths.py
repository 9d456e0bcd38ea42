"""Where the BPF programs and probe manifests are.

In a wheel they are package data (pyprobe/_data/...); in a source checkout or
an editable install they are the repo's top-level bpf/ and probes/.
"""

from pathlib import Path

_PKG = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    for candidate in (_PKG / "_data" / name, _PKG.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"pyprobe data directory {name!r} not found next to {_PKG}")


def bpf_dir() -> Path:
    return data_dir("bpf")


def probes_dir() -> Path:
    return data_dir("probes")
