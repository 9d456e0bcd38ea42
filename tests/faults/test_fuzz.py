"""8a. Hostile input, fuzzed: web configs and probe manifests. Whatever the
bytes, loading either succeeds or raises the one error type the CLI prints
as a single line (PyprobeError); never anything else. No root needed."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyprobe.core.manifest import parse
from pyprobe.errors import PyprobeError
from pyprobe.exporter import webconfig
from pyprobe.paths import bpf_dir, probes_dir

FUZZ = settings(
    max_examples=int(os.environ.get("PYPROBE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
KEYS = [*webconfig.KNOWN, "cert_file", "key_file", "min_version", "headers", "alice", "x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=30),
    st.sampled_from(["TLS10", "TLS12", "TLS13", "$2b$04$" + "a" * 53]),
)
documents = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=10)), inner, max_size=4),
    ),
    max_leaves=20,
)
TMP = Path(tempfile.mkdtemp(prefix="pyprobe-fuzz-"))
(TMP / "cert.pem").write_text("not a certificate")
(TMP / "key.pem").write_text("not a key")


def load_config(text: str | bytes) -> None:
    path = TMP / "web.yml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        webconfig.load(path)
    except PyprobeError as e:
        assert "\n" not in str(e) and str(e).startswith(f"{path}: "), str(e)


@FUZZ
@given(documents)
def test_web_config_structures(doc):
    load_config(yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(st.binary(max_size=300))
def test_web_config_bytes(raw):
    load_config(raw)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(sorted(webconfig.KNOWN["tls_server_config"] or ())),
        st.one_of(st.sampled_from(["cert.pem", "key.pem", "TLS13", "nope"]), scalars),
        max_size=6,
    ),
    st.dictionaries(st.text(max_size=8), scalars, max_size=3),
)
def test_web_config_tls_and_users(tls, users):
    load_config(yaml.safe_dump({"tls_server_config": tls, "basic_auth_users": users}))


MANIFESTS = {p.name: p.read_text() for p in sorted(probes_dir().glob("*.toml"))}


def mutate(text: str, data) -> str:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 4))):
        if not lines:
            break
        i = data.draw(st.integers(0, len(lines) - 1))
        op = data.draw(st.sampled_from(["drop", "dup", "value", "junk", "swap"]))
        if op == "drop":
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            value = data.draw(
                st.sampled_from(
                    [
                        '""',
                        "0",
                        "-1",
                        "99999999999999999999",
                        "true",
                        "[]",
                        "{}",
                        '"x"',
                        "1.5",
                        '["a", 1]',
                        "{ name = 1 }",
                        '"raw_tracepoint"',
                        '"counter"',
                    ]
                )
            )
            lines[i] = f"{key}= {value}"
        elif op == "junk":
            lines[i] = data.draw(st.text(max_size=20))
        elif op == "swap" and len(lines) > 1:
            j = data.draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    return "\n".join(lines)


@FUZZ
@given(st.sampled_from(sorted(MANIFESTS)), st.data())
def test_mutated_manifests(name, data):
    text = mutate(MANIFESTS[name], data)
    try:
        parse(text, Path(name), bpf_dir())
    except PyprobeError as e:
        assert "\n" not in str(e).strip(), str(e)


@FUZZ
@given(st.text(max_size=400))
def test_manifest_text(text):
    with contextlib.suppress(PyprobeError):
        parse(text, Path("fuzz.toml"), bpf_dir())
