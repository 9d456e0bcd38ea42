"""Settings that exist only as environment variables are in the --help of
the commands they change (so a new one cannot be forgotten), `pyprobe
doctor` prints those that are set, and no help sends a user who installed
the wheel or the Debian package to a checkout's make targets."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from fakes import fake_env

from pyprobe import cli, paths
from pyprobe.cli.common import ENVIRONMENT, Context

PKG = Path(cli.__file__).resolve().parents[1]
# Read, but not a setting: extended for the compiler processes it starts.
NOT_SETTINGS = {"PYTHONPATH"}
ALL = set(ENVIRONMENT)
LOADING = {"PYPROBE_DISABLE_HOOKS", "PYPROBE_MAP_ENTRIES", "PYPROBE_PROGRAM_CACHE"}
STREAMING = ALL


def _is_environ(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "environ"
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def environment_reads() -> dict[str, str]:
    """Every environment variable the package reads by name (os.environ.get,
    os.getenv, os.environ[...], ... in os.environ) -> where."""
    trees = {p: ast.parse(p.read_text()) for p in sorted(PKG.rglob("*.py"))}
    constants = {
        target.id: node.value.value
        for tree in trees.values()
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    reads: dict[str, str] = {}
    for path, tree in trees.items():
        for node in ast.walk(tree):
            key = None
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
                f = node.func
                if (f.attr == "get" and _is_environ(f.value)) or (
                    f.attr == "getenv" and isinstance(f.value, ast.Name) and f.value.id == "os"
                ):
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and _is_environ(node.value):
                key = node.slice
            elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
                key = node.left
            if key is None:
                continue
            where = f"{path.relative_to(PKG.parent)}:{node.lineno}"
            if isinstance(key, ast.Constant):
                name = key.value
            else:
                name = constants.get(key.id) if isinstance(key, ast.Name) else None
            assert isinstance(name, str), f"{where}: name the variable with a constant"
            reads[name] = where
    return reads


def command_paths(group: click.Group, ctx: click.Context, prefix=()) -> list[tuple[str, ...]]:
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        out.append((*prefix, name))
        if isinstance(command, click.Group):
            out += command_paths(command, ctx, (*prefix, name))
    return out


@pytest.fixture(scope="module")
def helps() -> dict[str, str]:
    """'lab up' -> `pyprobe lab up --help`, for every command there is."""
    context = Context(env=fake_env)
    with click.Context(cli.cli, obj=context) as ctx:
        every = command_paths(cli.cli, ctx)
    out = {}
    for path in [(), *every]:
        result = CliRunner().invoke(cli.cli, [*path, "--help"], obj=context, prog_name="pyprobe")
        assert result.exit_code == 0, (path, result.output)
        out[" ".join(path)] = result.output
    return out


def section(text: str, title: str) -> str:
    m = re.search(rf"^{title}:\n(.*?)(?:\n\n|\Z)", text, re.M | re.S)
    return m.group(1) if m else ""


def environment_of(text: str) -> set[str]:
    return set(re.findall(r"^  ([A-Z][A-Z0-9_]*)\b", section(text, "Environment"), re.M))


def test_every_variable_read_is_in_the_help_of_some_command(helps):
    reads = environment_reads()
    documented = set().union(*(environment_of(t) for t in helps.values()))
    for name, where in reads.items():
        if name not in NOT_SETTINGS:
            assert name in documented, f"{name} (read at {where}) is in no command's --help"
    # ... and every one documented is still read somewhere.
    assert not ALL - set(reads), f"documented, never read: {ALL - set(reads)}"


@pytest.mark.parametrize(
    "command, expected",
    [
        ("export", LOADING),
        ("top", LOADING),
        ("softirqs", LOADING),  # counts only: no stream
        ("queues", LOADING),
        ("compile", LOADING | {"PYPROBE_RINGBUF_PAGES"}),  # the streams' programs too
        ("conn", LOADING | {"PYPROBE_RINGBUF_PAGES"}),
        ("tcpstates", STREAMING),
        ("tcplife", STREAMING),
        ("drops", STREAMING),
        ("doctor", ALL),  # it reports on each
        ("list", {"PYPROBE_DISABLE_HOOKS"}),
        ("lab up", {"PYPROBE_PROGRAM_CACHE"}),  # the --loss classifier is kept there
        ("dashboard", set()),
    ],
)
def test_each_command_lists_what_changes_it(helps, command, expected):
    assert environment_of(helps[command]) == expected


def test_no_help_sends_an_install_to_a_checkout(helps):
    for command, text in helps.items():
        assert not re.search(r"make (setup|demo|test)|\.venv/", text), command
    assert "Debian package runs it at install" in " ".join(helps["compile"].split())


def test_export_and_dashboard_name_the_files_an_install_hands_on(helps):
    export = section(helps["export"], "Files")
    assert str(paths.systemd_unit()) in export and str(paths.rules_file()) in export
    dashboard = section(helps["dashboard"], "Files")
    assert str(paths.dashboards_dir() / "pyprobe-overview.json") in dashboard
    assert str(paths.rules_file()) in dashboard


def test_doctor_prints_the_variables_set(monkeypatch, capsys):
    monkeypatch.setenv("PYPROBE_MAP_ENTRIES", "netdev.devices=1024")
    monkeypatch.setenv("PYPROBE_NATIVE", "off")
    monkeypatch.delenv("PYPROBE_RINGBUF_PAGES", raising=False)
    monkeypatch.delenv("PYPROBE_DISABLE_HOOKS", raising=False)
    with pytest.raises(SystemExit):
        cli.main(["doctor"], context=Context(env=fake_env))
    out = capsys.readouterr().out
    shown = re.findall(r"^\[--\] environment +(\S+)$", out, re.M)
    # conftest turns the program cache off for the whole suite
    assert sorted(shown) == [
        "PYPROBE_MAP_ENTRIES=netdev.devices=1024",
        "PYPROBE_NATIVE=off",
        "PYPROBE_PROGRAM_CACHE=off",
    ]
