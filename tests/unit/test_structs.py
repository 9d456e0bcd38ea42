"""bpf/pyprobe.h, read by core/events.py, must be what the C compiler lays
out: every member's offset and every struct's size, and the #defines."""

import ctypes
import re
import shutil
import subprocess

import pytest

from pyprobe.core.events import header, parse
from pyprobe.errors import PyprobeError
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
@pytest.mark.parametrize("name", sorted(header().layouts))
def test_layout_matches_gcc(tmp_path, name):
    layout = header().layout(name)
    c = c_layout(tmp_path, name, [m.name for m in layout.members])
    assert c["sizeof"] == layout.size == layout.record.size == ctypes.sizeof(layout.ctype)
    for m in layout.members:
        assert c[m.name] == m.offset == getattr(layout.ctype, m.name).offset, m.name


def test_every_struct_and_define_of_the_header_is_read():
    text = (bpf_dir() / "pyprobe.h").read_text()
    structs = set(re.findall(r"^struct (\w+) \{", text, re.M))
    assert structs == set(header().layouts) and len(structs) >= 3
    defines = dict(re.findall(r"^#define PYPROBE_(\w+) (\S+)", text, re.M))
    assert {k: int(v, 0) for k, v in defines.items()} == header().constants
    assert header().enum("TCP_") == {
        1: "retransmit",
        2: "synack_retransmit",
        3: "reset_sent",
        4: "reset_received",
    }


def test_a_member_added_to_the_header_is_a_field_of_the_record():
    base = (bpf_dir() / "pyprobe.h").read_text()
    grown = parse(base.replace("\t__u32 segs;", "\t__u32 segs;\n\t__u32 mss;", 1))
    before, after = header().layout("tcp_event"), grown.layout("tcp_event")
    at = before.fields().index("segs") + 1
    assert after.fields() == (*before.fields()[:at], "mss", *before.fields()[at:])
    offsets = {m.name: m.offset for m in after.members}
    assert offsets["mss"] == offsets["segs"] + 4 and offsets["flags"] == offsets["mss"] + 4


def test_a_member_it_cannot_read_is_one_line():
    with pytest.raises(PyprobeError, match="cannot read member"):
        parse("struct x { float f; };")
