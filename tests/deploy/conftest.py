"""The deployed form (issue 30): the image `make image` builds, the Kubernetes
manifests, the DaemonSet's pod played by podman, and a real Prometheus
scraping it while containers make traffic. What the tests measure (image
size, build time, start-up, memory) is printed at the end of the run."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.deploy import podman as pm

MEASURED: list[str] = []


def pytest_collection_modifyitems(config, items):
    """Everything here but the manifests' checks runs podman as root and
    loads eBPF (the root conftest skips those as non-root)."""
    for item in items:
        if "test_manifests" not in item.nodeid:
            item.add_marker(pytest.mark.root)
            item.add_marker(pytest.mark.kernel)


def pytest_terminal_summary(terminalreporter):
    if MEASURED:
        terminalreporter.section("deployed form: measured")
        for line in MEASURED:
            terminalreporter.write_line(line)


def measured(line: str) -> None:
    MEASURED.append(line)


@pytest.fixture(scope="session")
def image() -> str:
    """The image of this checkout, built (or found cached), under a name of
    this run's own: a build from another checkout cannot swap it underneath."""
    if os.geteuid() != 0:
        pytest.skip("needs root (make test runs as root)")
    if shutil.which("podman") is None or shutil.which("buildah") is None:
        pytest.fail("podman or buildah missing: run make setup")
    name, took, said = pm.build_image()
    what = "cached" if "image: cached:" in said else "built"
    size = pm.image_inspect(name)["Size"]
    measured(f"image {name}: {size / 1e6:.0f} MB, {what} in {took:.1f} s")
    mine = f"localhost/pyprobe-test:{os.getpid()}"
    pm.podman("tag", name, mine)
    why = pm.why_no_containers(mine)
    if why is not None:
        pm.podman("untag", mine, mine, check=False)
        pytest.skip(f"podman cannot run containers here: {why}")
    yield mine
    pm.podman("untag", mine, mine, check=False)


@pytest.fixture(scope="session")
def export_options(image) -> set[str]:
    return pm.export_options(image)
