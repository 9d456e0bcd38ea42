"""Every probe: a manifest in probes/ and its program in bpf/, paired by file
stem, plus, only where a manifest cannot say it, a module here named like
them that registers a Probe subclass (node_exporter's way: the module
registers itself when imported; core.probe.plugin).

The CLI, `top`, the exporter and the dashboard are built from a Registry:
a new counting probe is its two files. A registry can read another tree
(tests copy a probe's pair into a scratch one)."""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..core import manifest as manifest_mod
from ..core.manifest import Manifest
from ..core.probe import PLUGINS, Probe
from ..errors import PyprobeError
from ..kernel.env import KernelEnv
from ..load.program import Loader
from ..paths import bpf_dir, probes_dir


class Registry:
    def __init__(self, probes: Path | None = None, programs: Path | None = None) -> None:
        self.probes_dir = probes or probes_dir()
        self.bpf_dir = programs or bpf_dir()

    @functools.cached_property
    def manifests(self) -> dict[str, Manifest]:
        found = {}
        for path in sorted(self.probes_dir.glob("*.toml")):
            m = manifest_mod.load(path, self.bpf_dir)
            found[m.name] = m
        metrics: dict[str, str] = {}
        for m in found.values():
            for metric in m.metrics:
                if metrics.get(metric.name, m.name) != m.name:  # (within one: load's check)
                    raise manifest_mod.ManifestError(
                        f"{m.path.name}: metrics {metric.name}: also probe "
                        f"{metrics[metric.name]}'s (a metric name is the exporter's, once)"
                    )
                metrics[metric.name] = m.name
        return found

    def names(self) -> list[str]:
        """The probes the exporter, `top`, `list` and the dashboard are made
        of: every one but those loaded only by their own command (on_demand)."""
        return [n for n, m in self.manifests.items() if not m.on_demand]

    def manifest(self, name: str) -> Manifest:
        self.check([name])
        return self.manifests[name]

    def check(self, names: Iterable[str]) -> None:
        """Every name a probe's, or one line naming the ones there are."""
        known = self.manifests
        for name in names:
            if name not in known:
                raise PyprobeError(f"unknown probe {name!r}; known probes: {', '.join(known)}")

    def probe_class(self, name: str) -> type[Probe]:
        if name not in PLUGINS and importlib.util.find_spec(f"{__name__}.{name}"):
            importlib.import_module(f"{__name__}.{name}")  # registers itself
        return PLUGINS.get(name, Probe)

    def create(
        self,
        name: str,
        env: KernelEnv | None = None,
        loader: Loader | None = None,
        features: Iterable[str] | None = None,
    ) -> Probe:
        """A probe, with these features on (None: its manifest's defaults)."""
        return self.probe_class(name)(self.manifest(name), env, loader, features)

    def select(
        self, include: Sequence[str] = (), exclude: Sequence[str] = ()
    ) -> dict[str, frozenset[str] | None]:
        """Probe name -> the features to turn on with its defaults (None: the
        defaults alone), from --probe and --no-probe: NAME, NAME.FEATURE
        (repeat for more), NAME.all (every feature); `*` for every probe
        (`*.all`: every probe, every feature). Nothing included: every
        probe, its defaults."""
        chosen: dict[str, set[str] | None] = {}
        for spec in include or ("*",):
            name, _, feature = spec.partition(".")
            names = self.names() if name == "*" else [name]
            self.check(names)
            for n in names:
                extra = chosen.setdefault(n, None)
                if not feature:
                    continue
                known = {f.name for f in self.manifests[n].features}
                signals = {f.name for f in self.manifests[n].features if not f.label}
                if feature != "all" and feature not in known:
                    raise PyprobeError(
                        f"{n}: no feature {feature!r}; its features: "
                        f"{', '.join(sorted(known)) or 'none'} (or all)"
                    )
                chosen[n] = (extra or set()) | (signals if feature == "all" else {feature})
        self.check(exclude)
        return {
            n: (None if f is None else frozenset(f) | self.manifests[n].default_features)
            for n, f in chosen.items()
            if n not in exclude
        }

    def with_labels(
        self, chosen: Mapping[str, frozenset[str] | None], labels: Iterable[str]
    ) -> dict[str, frozenset[str] | None]:
        """select()'s choice with the label features named (--label cgroup)
        turned on where a probe has them."""
        out = dict(chosen)
        for name, features in chosen.items():
            manifest = self.manifests[name]
            named = {f.name for f in manifest.features if f.label and f.name in labels}
            if named:
                out[name] = (manifest.default_features if features is None else features) | named
        return out


@functools.cache
def default() -> Registry:
    """The probes of this install (the repo's probes/ and bpf/, or the
    wheel's package data)."""
    return Registry()
