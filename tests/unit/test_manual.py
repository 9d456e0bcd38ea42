"""What is made from the command tree: examples in every command's help,
the shell completion scripts (and completion itself), the manual pages."""

import os
import re
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from pyprobe.cli import cli
from pyprobe.cli.common import Context
from pyprobe.cli.manual import _walk, pages


def commands():
    ctx = click.Context(cli, info_name="pyprobe", obj=Context())
    return [(" ".join(path), command) for path, command, _ in _walk(cli, ctx, ["pyprobe"])]


@pytest.mark.parametrize(("path", "command"), commands(), ids=[p for p, _ in commands()])
def test_every_command_has_examples_in_its_help(path, command):
    args = path.split()[1:]
    result = CliRunner().invoke(cli, [*args, "--help"], obj=Context())
    assert result.exit_code == 0, result.output
    examples = result.output.split("Examples:", 1)
    assert len(examples) == 2, f"{path} --help has no Examples:"
    lines = [line.strip() for line in examples[1].splitlines()]
    shown = [line for line in lines if line.startswith("pyprobe") or "| pyprobe" in line]
    assert shown, f"{path}: no example command"


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash", "complete -o nosort -F"),
        ("zsh", "#compdef pyprobe"),
        ("fish", "complete --no-files --command pyprobe"),
    ],
)
def test_completion_prints_the_shells_script(shell, marker):
    result = CliRunner().invoke(cli, ["completion", shell], obj=Context())
    assert result.exit_code == 0
    assert marker in result.output and "_PYPROBE_COMPLETE" in result.output


def test_completion_refuses_an_unknown_shell():
    result = CliRunner().invoke(cli, ["completion", "tcsh"], obj=Context())
    assert result.exit_code == 2 and "'tcsh' is not one of 'bash', 'zsh', 'fish'" in result.output


def complete(words: str) -> list[str]:
    """What the installed script asks for: bash's protocol, through run()."""
    env = {
        **os.environ,
        "_PYPROBE_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    run = subprocess.run(
        [sys.executable, "-c", "from pyprobe.cli import run; run()"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return [line.split(",", 1)[1] for line in run.stdout.splitlines()]


def test_completion_completes_commands_formats_and_probe_names():
    assert complete("pyprobe dr") == ["drops"]
    assert complete("pyprobe drops --format ") == ["table", "plain", "json"]
    assert set(complete("pyprobe export --probe netdev")) >= {
        "netdev",
        "netdev.sizes",
        "netdev.all",
    }
    assert "tcpstates" in complete("pyprobe top --probe tcp")


def test_man_pages_for_every_command(tmp_path):
    result = CliRunner().invoke(cli, ["man", str(tmp_path)], obj=Context())
    assert result.exit_code == 0, result.output
    written = {p.name for p in tmp_path.glob("*.1")}
    expected = {"-".join(path.split()) + ".1" for path, _ in commands()}
    assert written == expected
    assert {"pyprobe.1", "pyprobe-drops.1", "pyprobe-lab-up.1", "pyprobe-rules.1"} <= written
    root = (tmp_path / "pyprobe.1").read_text()
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "OPTIONS", "EXIT STATUS"):
        assert f".SH {section}\n" in root
    assert "\\fBpyprobe\\-drops\\fR(1)" in root  # SEE ALSO every page
    drops = (tmp_path / "pyprobe-drops.1").read_text()
    assert drops.startswith('.TH PYPROBE-DROPS 1 "" "pyprobe ')
    assert "pyprobe\\-drops \\- Packet drops" in drops
    for section in ("OPTIONS", "EXAMPLES", "ENVIRONMENT", "SEE ALSO"):
        assert f".SH {section}\n" in drops
    assert "\\fB\\-\\-format\\fR" in drops and "PYPROBE_MAP_ENTRIES" in drops
    for page in tmp_path.glob("*.1"):
        assert not re.search(r"^[.'](?!TH|SH|TP|PP|nf|fi|B )", page.read_text(), re.M), page


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff missing")
def test_man_pages_render_without_warnings(tmp_path):
    for name, text in pages(cli, click.Context(cli, info_name="pyprobe", obj=Context())):
        page = tmp_path / f"{name}.1"
        page.write_text(text)
        check = subprocess.run(["groff", "-man", "-ww", "-z", page], capture_output=True, text=True)
        assert check.returncode == 0 and not check.stderr, (name, check.stderr)
