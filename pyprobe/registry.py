"""Every probe: a manifest in probes/ plus, optionally, a module in
pyprobe/probes/ named like it that registers a Probe subclass for custom
decoding (node_exporter style: the module registers itself on import)."""

from __future__ import annotations

import functools
import importlib
import importlib.util

from . import manifest as manifest_mod
from .errors import PyprobeError
from .kernel import KernelEnv
from .loader import Loader
from .manifest import Manifest
from .paths import bpf_dir, probes_dir
from .probe import Probe

_CLASSES: dict[str, type[Probe]] = {}


def register(name: str):
    def wrap(cls: type[Probe]) -> type[Probe]:
        _CLASSES[name] = cls
        return cls

    return wrap


@functools.cache
def manifests() -> dict[str, Manifest]:
    found = {}
    for path in sorted(probes_dir().glob("*.toml")):
        m = manifest_mod.load(path, bpf_dir())
        found[m.name] = m
    return found


def names() -> list[str]:
    return list(manifests())


def probe_class(name: str) -> type[Probe]:
    if name not in _CLASSES and importlib.util.find_spec(f"pyprobe.probes.{name}"):
        importlib.import_module(f"pyprobe.probes.{name}")
    return _CLASSES.get(name, Probe)


def create(name: str, env: KernelEnv | None = None, loader: Loader | None = None) -> Probe:
    known = manifests()
    if name not in known:
        raise PyprobeError(f"unknown probe {name!r}; known probes: {', '.join(known)}")
    return probe_class(name)(known[name], env=env, loader=loader)
