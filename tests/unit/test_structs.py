"""The ctypes mirror must match bpf/pyprobe.h as the C compiler lays it out."""

import ctypes
import shutil
import subprocess

import pytest

from pyprobe import structs
from pyprobe.paths import bpf_dir


def c_layout(tmp_path, struct: str, fields: list[str]) -> dict[str, int]:
    checks = "\n".join(f'printf("{f} %zu\\n", offsetof(struct {struct}, {f}));' for f in fields)
    src = tmp_path / "layout.c"
    src.write_text(
        "#include <stdio.h>\n#include <stddef.h>\n#include <linux/types.h>\n"
        '#include "pyprobe.h"\n'
        f"int main(void) {{ {checks}\n"
        f'printf("sizeof %zu\\n", sizeof(struct {struct})); return 0; }}\n'
    )
    exe = tmp_path / "layout"
    subprocess.run(["gcc", f"-I{bpf_dir()}", "-o", exe, src], check=True)
    out = subprocess.run([exe], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}


@pytest.mark.skipif(not shutil.which("gcc"), reason="gcc missing (make setup installs it)")
@pytest.mark.parametrize("name", sorted(structs.STRUCTS))
def test_ctypes_matches_header(tmp_path, name):
    cls = structs.STRUCTS[name]
    fields = [f for f, *_ in cls._fields_]
    c = c_layout(tmp_path, name, fields)
    assert c["sizeof"] == ctypes.sizeof(cls)
    for f in fields:
        assert c[f] == getattr(cls, f).offset, f


def test_constants_match_header():
    header = (bpf_dir() / "pyprobe.h").read_text()
    assert f"#define PYPROBE_COMM_LEN {structs.COMM_LEN}" in header
    assert f"#define PYPROBE_TCP_STATE_SLOTS {structs.TCP_STATE_SLOTS}" in header
    assert f"#define PYPROBE_F_OWNER_KNOWN {structs.F_OWNER_KNOWN:#x}" in header
    assert f"#define PYPROBE_F_DELTA_KNOWN {structs.F_DELTA_KNOWN:#x}" in header


def test_probe_set_constants_match_header():
    header = (bpf_dir() / "pyprobe.h").read_text()
    assert f"#define PYPROBE_F_HAS_TUPLE {structs.F_HAS_TUPLE:#x}" in header
    for name in ("RETRANSMIT", "SYNACK_RETRANSMIT", "RESET_SENT", "RESET_RECEIVED"):
        assert f"#define PYPROBE_TCP_{name} {getattr(structs, f'TCP_{name}')}" in header
