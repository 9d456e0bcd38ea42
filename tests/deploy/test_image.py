"""The image `make image` builds (deploy/image/build.sh): the Debian package
of this checkout installed as dpkg installs it, small, its program cache
warmed for this kernel, cached between runs, and `pyprobe export` its
entrypoint, with one-line errors and exit 2 on bad input."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pyprobe.core.compile import jobs
from pyprobe.probes import default
from tests.deploy import podman as pm
from tests.deploy.conftest import measured

ROOT = Path(__file__).resolve().parents[2]
SITE = "/usr/lib/python3/dist-packages"


def run_in(image: str, *argv: str, entrypoint: str = "/bin/sh") -> str:
    run = pm.podman("run", "--rm", "--network", "none", "--entrypoint", entrypoint, image, *argv)
    return run.stdout


def test_the_image_holds_the_deb_of_this_checkout_at_its_paths(image, tmp_path):
    """Every file the .deb ships is where dpkg put it, byte for byte, and
    dpkg in the image lists exactly the .deb's files."""
    deb = subprocess.run(
        ["/usr/bin/python3", ROOT / "contrib/debian/build.py", "--out", tmp_path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True)
    shipped = sorted(
        line.split()[5].removeprefix(".")
        for line in listing.stdout.splitlines()
        if line.startswith("-")
    )
    installed = set(run_in(image, "-c", "dpkg -L pyprobe").split())
    assert [f for f in shipped if f not in installed] == []
    tree = tmp_path / "tree"
    subprocess.run(["dpkg-deb", "-x", deb, tree], check=True)
    # No docs in the image but the copyright (dpkg's path-exclude); a conffile may be edited.
    docs = [f for f in shipped if f.startswith("/usr/share/doc/") and not f.endswith("/copyright")]
    assert docs and run_in(image, "-c", f"ls {' '.join(docs)} 2>/dev/null | wc -l").strip() == "0"
    files = [f for f in shipped if not f.startswith("/etc/") and f not in docs]
    sums = run_in(image, "-c", "md5sum " + " ".join(files))
    image_sums = {line.split()[1]: line.split()[0] for line in sums.splitlines()}
    local = subprocess.run(
        ["md5sum", *(str(tree) + f for f in files)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in local.splitlines():
        digest, path = line.split()
        assert image_sums[path.removeprefix(str(tree))] == digest, path
    version = run_in(image, "-c", "dpkg-query -W -f '${Version} ${Status}' pyprobe")
    meta = (ROOT / "pyproject.toml").read_text()
    assert (
        version
        == next(ln.split('"')[1] for ln in meta.splitlines() if ln.startswith("version"))
        + " install ok installed"
    )
    # byte-compiled by the package's postinst: a read-only root never writes .pyc
    compiled = run_in(image, "-c", f"ls {SITE}/pyprobe/__pycache__ | grep -c cpython-311.pyc")
    assert int(compiled) > 0


def test_entrypoint_user_and_labels(image):
    config = pm.image_inspect(image)["Config"]
    version = config["Labels"]["org.opencontainers.image.version"]
    assert config["Entrypoint"] == ["/usr/bin/pyprobe", "export"]
    assert config["Cmd"] == ["--web.listen-address=:9977", "--drop-privileges=pyprobe"]
    assert config.get("User", "") in ("0:0", "0", "")  # root to attach; it drops after
    assert "9977/tcp" in config["ExposedPorts"]
    assert f'version = "{version}"' in (ROOT / "pyproject.toml").read_text()
    assert len(config["Labels"]["io.pyprobe.image.inputs"]) == 16
    # the image every test here runs is the one `make image` names by the version
    assert pm.image_inspect(image)["Id"] == pm.image_inspect(f"localhost/pyprobe:{version}")["Id"]
    passwd = run_in(image, "-c", "getent passwd pyprobe")
    assert passwd.strip() == "pyprobe:x:9977:9977::/nonexistent:/usr/sbin/nologin"


def test_small_no_docs_no_recommends_no_setuid(image):
    size = pm.image_inspect(image)["Size"]
    assert size < 420e6, f"{size / 1e6:.0f} MB"
    found = run_in(
        image,
        "-c",
        "find /usr/share/doc -type f ! -name copyright | wc -l;"
        "find /usr/share/man /usr/share/info -type f | wc -l;"
        "ls -A /usr/share/locale | grep -vx locale.alias | wc -l;"
        "find / -xdev -type f -perm /6000 | wc -l;"
        # what the .deb recommends, and headers: none installed
        "dpkg -l gcc bpftool iproute2 'linux-headers-*' 2>/dev/null | grep -c ^ii; true",
    ).split()
    assert found == ["0", "0", "0", "0", "0"], found
    # the node's headers are mounted, not baked in
    assert run_in(image, "-c", "ls /usr/src | wc -l; ls /lib/modules | wc -l").split() == ["0", "0"]


def test_the_program_cache_is_warmed_for_this_kernel(image):
    """The build compiled every program of this kernel into the image's
    cache (root's, 0700); pyprobe compile in the image, with the DaemonSet's
    privileges, finds every program of this checkout (the exporter's and the
    streams') kept and compiles nothing."""
    listing = run_in(
        image, "-c", "stat -c '%U %a' /var/cache/pyprobe/programs; ls /var/cache/pyprobe/programs"
    ).split()
    assert listing[:2] == ["root", "700"]
    assert len([e for e in listing[2:] if e.endswith(".json")]) >= 6
    ds = pm.daemonset()["spec"]["template"]["spec"]
    caps = ds["containers"][0]["securityContext"]["capabilities"]["add"]
    out = pm.podman(
        "run", "--rm", "--network", "host", "--cap-drop", "all",
        "--cap-add", ",".join(caps), "--security-opt", "seccomp=unconfined",
        "--read-only", "--tmpfs", "/tmp",
        "-v", "/lib/modules:/lib/modules:ro", "-v", "/usr/src:/usr/src:ro",
        "--entrypoint", "/usr/bin/pyprobe", image, "compile", check=False,
    ).stdout  # fmt: skip
    rows = dict(re.findall(r"(?m)^(\S+(?: \(\S+\))?)\s+(\S+)", out))
    expected = [job.name for job in jobs([default().create(n) for n in default().names()])]
    assert sorted(rows) == sorted(expected), out
    assert set(rows.values()) == {"kept"}, out


def test_bad_input_is_one_line_and_exit_2(image):
    for args, words in (
        (["--web.listen-address", "nonsense"], "bad --web.listen-address"),
        (["--drop-privileges", "nosuchuser"], "no user 'nosuchuser'"),
        (["--no-such-flag"], "--no-such-flag"),
    ):
        run = pm.podman("run", "--rm", "--network", "none", image, *args, check=False)
        lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
        assert run.returncode == 2, (args, run.returncode, run.stderr)
        assert len(lines) == 1 and lines[0].startswith("pyprobe: error: "), run.stderr
        assert words in lines[0]


def test_a_second_build_with_the_same_inputs_is_the_cache(image):
    _name, took, said = pm.build_image()
    assert "image: cached:" in said, said
    assert took < 10
    measured(f"make image with nothing changed: {took:.1f} s")


def doctor_in(image: str, caps: list[str]) -> subprocess.CompletedProcess:
    """pyprobe doctor in the image as the DaemonSet runs it, with these capabilities."""
    return pm.podman(
        "run", "--rm", "--network", "host", "--cap-drop", "all",
        "--cap-add", ",".join(caps), "--security-opt", "seccomp=unconfined",
        "--read-only", "--tmpfs", "/tmp", "-v", "/sys:/host/sys:ro,rslave",
        "-v", "/lib/modules:/lib/modules:ro", "-v", "/usr/src:/usr/src:ro",
        "--entrypoint", "/usr/bin/pyprobe", image, "--path.sysfs=/host/sys", "doctor",
        check=False,
    )  # fmt: skip


def test_doctor_in_the_image_gives_the_advice_for_a_missing_capability(image):
    """With the DaemonSet's capabilities every probe can run and the program
    cache is warm; without CAP_BPF, doctor names it with the podman flag and
    the Kubernetes field that bring it in, and exits 2."""
    caps = pm.daemonset()["spec"]["template"]["spec"]["containers"][0]["securityContext"][
        "capabilities"
    ]["add"]
    n = len(default().names())
    run = doctor_in(image, caps)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"\n{n} of {n} probes can run here" in run.stdout, run.stdout
    ok = re.search(r"(?m)^\[ok\] capabilities +(.*)$", run.stdout)
    assert ok and set(ok.group(1).split(", ")) == {f"CAP_{c}" for c in caps}, run.stdout
    assert re.search(r"(?m)^\[ok\] programs +all \d+ programs compiled", run.stdout), run.stdout
    run = doctor_in(image, [c for c in caps if c != "BPF"])
    assert run.returncode == 2, run.stdout + run.stderr
    advice = (
        "[!!] capabilities   missing CAP_BPF: load BPF programs — podman run --cap-add=BPF …;"
        ' Kubernetes: securityContext.capabilities.add: ["BPF"]'
    )
    assert advice in run.stdout.splitlines(), run.stdout
