"""deploy/kubernetes/ checked without a cluster, as far as offline tools go:

- Namespace, ServiceAccount, DaemonSet and Service against the Kubernetes
  API's own JSON schemas (kubernetes-validate, strict: an unknown field is
  an error, as kubectl's default field validation makes it), for the oldest
  and newest Kubernetes versions it carries and one between;
- the PodMonitor against a schema of the fields it uses, written here from
  the Prometheus Operator's CRD (monitoring.coreos.com/v1), not the CRD
  itself;
- the kustomization by what kustomize would need: its resources exist, its
  image is the DaemonSet's;
- and the parts against each other and against pyprobe: selectors and
  labels, port names, the flags `pyprobe export` knows, the user the image
  makes. What no schema says (does the pod run?) tests/deploy/test_kube_play.py
  finds out with podman.
"""

from __future__ import annotations

import copy
from pathlib import Path

import jsonschema
import pytest
import yaml

from pyprobe.cli.export import export_cmd
from pyprobe.core.manifest import tomllib

kubernetes_validate = pytest.importorskip("kubernetes_validate.utils")

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.26.0", "1.31.0", "1.37.0")
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def load(name: str) -> dict:
    return yaml.safe_load((K8S / name).read_text())


CORE = ("namespace.yaml", "serviceaccount.yaml", "daemonset.yaml", "service.yaml")


def pod_spec() -> dict:
    return load("daemonset.yaml")["spec"]["template"]["spec"]


def exporter() -> dict:
    (container,) = [c for c in pod_spec()["containers"] if c["name"] == "exporter"]
    return container


# -- the Kubernetes schema ----------------------------------------------------------------
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", CORE)
def test_against_the_kubernetes_schema_strictly(name, version):
    kubernetes_validate.validate(load(name), version, strict=True)


@pytest.mark.parametrize(
    "breakage",
    [
        ("a misspelled field", lambda ds: ds["spec"]["template"]["spec"]["containers"][0]
         ["securityContext"].update(readOnlyRootFileSystem=True)),
        ("a wrong type", lambda ds: ds["spec"]["template"]["spec"].update(hostNetwork="yes")),
        ("a field in the wrong place", lambda ds: ds["spec"].update(hostNetwork=True)),
    ],
    ids=lambda b: b[0],
)  # fmt: skip
def test_the_schema_check_catches_a_broken_daemonset(breakage):
    """The check above has teeth: the DaemonSet broken three ways fails it."""
    ds = copy.deepcopy(load("daemonset.yaml"))
    breakage[1](ds)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, VERSIONS[-1], strict=True)


# -- the PodMonitor --------------------------------------------------------------------------
def _obj(properties: dict, required: tuple[str, ...] = ()) -> dict:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


_STR = {"type": "string"}
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
             r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}  # fmt: skip
# The fields this PodMonitor uses, as the CRD types them; any other is refused.
PODMONITOR = _obj(
    {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "PodMonitor"},
        "metadata": _obj({"name": _STR, "labels": {"type": "object"}}, ("name",)),
        "spec": _obj(
            {
                "selector": _obj({"matchLabels": {"type": "object", "additionalProperties": _STR}}),
                "podMetricsEndpoints": {
                    "type": "array",
                    "items": _obj(
                        {
                            "port": _STR,
                            "path": _STR,
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "relabelings": {
                                "type": "array",
                                "items": _obj(
                                    {
                                        "sourceLabels": {
                                            "type": "array",
                                            "items": {
                                                "type": "string",
                                                "pattern": "^[a-zA-Z_][a-zA-Z0-9_]*$",
                                            },
                                        },
                                        "targetLabel": _STR,
                                    }
                                ),
                            },
                        }
                    ),
                },
            },
            ("selector",),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)


def test_podmonitor_against_the_fields_the_crd_gives_them():
    jsonschema.validate(load("podmonitor.yaml"), PODMONITOR)
    broken = copy.deepcopy(load("podmonitor.yaml"))
    broken["spec"]["podMetricsEndpoints"][0]["targetPort"] = "metrics"  # not PodMonitor's
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, PODMONITOR)


# -- the kustomization ----------------------------------------------------------------------
def test_the_kustomization_lists_every_manifest_and_names_the_image():
    k = load("kustomization.yaml")
    assert set(k) <= {"apiVersion", "kind", "namespace", "labels", "resources", "images"}
    assert (k["apiVersion"], k["kind"]) == ("kustomize.config.k8s.io/v1beta1", "Kustomization")
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(k["resources"]) == sorted(files)
    assert k["namespace"] == load("namespace.yaml")["metadata"]["name"]
    images = {c["image"] for c in pod_spec()["initContainers"] + pod_spec()["containers"]}
    assert images == {f"localhost/pyprobe:{VERSION}"}  # what `make image` tags
    assert k["images"] == [
        {"name": "localhost/pyprobe", "newName": "localhost/pyprobe", "newTag": VERSION}
    ]


# -- the parts against each other -----------------------------------------------------------
def test_selectors_labels_and_ports_agree():
    ds = load("daemonset.yaml")
    pod_labels = ds["spec"]["template"]["metadata"]["labels"]
    for selector in (
        ds["spec"]["selector"]["matchLabels"],
        load("service.yaml")["spec"]["selector"],
        load("podmonitor.yaml")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    (port,) = exporter()["ports"]
    assert port["name"] == "metrics" == load("service.yaml")["spec"]["ports"][0]["targetPort"]
    assert load("podmonitor.yaml")["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    assert f"--web.listen-address=:{port['containerPort']}" in exporter()["args"]
    assert load("serviceaccount.yaml")["metadata"]["name"] == pod_spec()["serviceAccountName"]


def test_privileges_are_the_documented_minimum():
    spec = pod_spec()
    assert spec["hostNetwork"] is True and spec["hostPID"] is False
    assert "hostIPC" not in spec
    assert spec["securityContext"]["seccompProfile"] == {"type": "Unconfined"}
    assert spec["automountServiceAccountToken"] is False
    sc = exporter()["securityContext"]
    assert sc["capabilities"] == {
        "drop": ["ALL"],
        "add": ["BPF", "PERFMON", "SYSLOG", "SETUID", "SETGID"],
    }
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert "privileged" not in sc
    # root to attach, then the image's user pyprobe (deploy/image/build.sh makes it)
    assert sc["runAsUser"] == 0
    assert "--drop-privileges=pyprobe" in exporter()["args"]
    build = (ROOT / "deploy/image/build.sh").read_text()
    assert "USER_ID=9977" in build and "useradd" in build
    for init in spec["initContainers"]:
        assert init["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_every_host_path_is_mounted_read_only_and_every_volume_is_used():
    spec = pod_spec()
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = [m for c in spec["initContainers"] + spec["containers"] for m in c["volumeMounts"]]
    assert {m["name"] for m in mounts} == set(volumes)
    for m in mounts:
        if "hostPath" in volumes[m["name"]]:
            assert m.get("readOnly") is True, m
        else:
            assert "emptyDir" in volumes[m["name"]], m
    paths = {m["mountPath"] for m in exporter()["volumeMounts"]}
    assert {"/lib/modules", "/usr/src", "/var/cache/pyprobe", "/tmp", "/host/sys"} <= paths
    assert "--path.sysfs=/host/sys" in exporter()["args"]


def test_the_memory_limit_is_above_the_request():
    resources = exporter()["resources"]

    def mib(q: str) -> int:
        return int(q.removesuffix("Mi"))

    assert mib(resources["requests"]["memory"]) < mib(resources["limits"]["memory"])
    # tests/deploy/test_kube_play.py starts the exporter cold under this limit


def test_the_exporter_knows_every_flag_the_daemonset_passes():
    known = {opt for p in export_cmd.params for opt in p.opts}
    unknown = [a for a in exporter()["args"] if a.split("=", 1)[0] not in known]
    assert unknown == []


def test_podman_config_for_this_kind_of_host():
    conf = tomllib.loads((ROOT / "deploy/podman/containers.conf").read_text())
    assert conf["engine"]["runtime"] == "runc"
    assert conf["engine"]["cgroup_manager"] == "cgroupfs"
    limits = dict(u.split("=") for u in conf["containers"]["default_ulimits"])
    for name in ("nofile", "nproc"):
        soft, hard = map(int, limits[name].split(":"))
        assert soft == hard <= 4096
