"""The documentation made from the command tree: `completion` (click's shell
completion script for bash, zsh or fish) and `man` (a manual page per
command, in roff, written from the same help text, options, environment
and files `--help` shows: `make man` writes build/man/*.1).

A small roff writer rather than a dependency (click-man, a Sphinx build):
the pages are NAME, SYNOPSIS, DESCRIPTION, OPTIONS, EXAMPLES, ENVIRONMENT,
FILES, EXIT STATUS and SEE ALSO, from what the commands already hold.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterator
from pathlib import Path

import click
from click.shell_completion import get_completion_class

from .. import __version__
from ..paths import data_dir
from .common import CONTEXT, ENVIRONMENT, Documented

PROG = "pyprobe"
COMPLETE_VAR = "_PYPROBE_COMPLETE"
SHELLS = ("bash", "zsh", "fish")
SHELL_FILES = {
    "bash": "~/.local/share/bash-completion/completions/pyprobe (or /etc/bash_completion.d/)",
    "zsh": 'a file "_pyprobe" in a directory of $fpath',
    "fish": "~/.config/fish/completions/pyprobe.fish",
}
EXIT_STATUS = (
    ("0", "Success (a count or stream ended by its COUNT, -d or a single Ctrl-C)."),
    (
        "1",
        "The command ran and its check failed: `compile` could not build a probe "
        "here, a `lab traffic` workload or a `lab scenario` verdict failed.",
    ),
    (
        "2",
        "A usage error, or a failure the user can fix (permissions, a kernel "
        "without the hook, a bad config): one line on stderr says which. "
        "`doctor`: no probe can run here.",
    ),
    ("130", "Interrupted by Ctrl-C where the command keeps running until then."),
    ("143", "Terminated by SIGTERM (probes detached first)."),
)


@click.command(cls=Documented, context_settings=CONTEXT)
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the shell completion script for bash, zsh or fish.

    Completes commands, options, choices (probe names, features, formats) and
    paths. Load it in the shell's start-up file, or save it where the shell
    looks for completions:

    \b
      bash: ~/.local/share/bash-completion/completions/pyprobe
      zsh:  a file named _pyprobe in a directory of $fpath
      fish: ~/.config/fish/completions/pyprobe.fish

    \b
    Examples:
      eval "$(pyprobe completion bash)"            # in ~/.bashrc
      pyprobe completion zsh > "${fpath[1]}/_pyprobe"
      pyprobe completion fish > ~/.config/fish/completions/pyprobe.fish
    """
    root = click.get_current_context().find_root().command
    cls = get_completion_class(shell)
    assert cls is not None  # a choice of SHELLS, all of which click knows
    click.echo(cls(root, {}, PROG, COMPLETE_VAR).source())


@click.command(cls=Documented, context_settings=CONTEXT, hidden=True)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def man(directory: Path) -> None:
    """Write a manual page per command into DIRECTORY (pyprobe.1, pyprobe-X.1).

    \b
    Examples:
      pyprobe man build/man && man -l build/man/pyprobe-drops.1
    """
    root = click.get_current_context().find_root()
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in pages(root.command, root):
        (directory / f"{name}.1").write_text(text)
        click.echo(directory / f"{name}.1")


def pages(root: click.Command, ctx: click.Context) -> Iterator[tuple[str, str]]:
    """(page name, roff text) for the root command and every command below it."""
    commands = list(_walk(root, ctx, [PROG]))
    names = ["-".join(path) for path, _c, _x in commands]
    for path, command, sub in commands:
        yield "-".join(path), page(path, command, sub, names)


def _walk(
    command: click.Command, ctx: click.Context, path: list[str]
) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    yield path, command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx), [*path, name])


def page(path: list[str], command: click.Command, ctx: click.Context, names: list[str]) -> str:
    name = "-".join(path)
    out = [
        f'.TH {name.upper()} 1 "" "{PROG} {__version__}" "pyprobe manual"',
        ".SH NAME",
        f"{esc(name)} \\- {esc(command.get_short_help_str(limit=200).rstrip('.'))}",
        ".SH SYNOPSIS",
        f".B {esc(' '.join(path))}",
        esc(" ".join(command.collect_usage_pieces(ctx))),
    ]
    description, examples = split_help(command.help or "")
    if description:
        out += [".SH DESCRIPTION", *description]
    if isinstance(command, click.Group):
        out.append(".SH COMMANDS")
        for sub_name in command.list_commands(ctx):
            sub = command.get_command(ctx, sub_name)
            if sub is None or sub.hidden:
                continue
            out += [".TP", f"\\fB{esc(sub_name)}\\fR", esc(sub.get_short_help_str(limit=300))]
    options = [p.get_help_record(ctx) for p in command.get_params(ctx)]
    records = [r for r in options if r is not None]
    if records:
        out.append(".SH OPTIONS")
        for opts, text in records:
            out += [".TP", _option(opts), esc(text)]
    if examples:
        out += [".SH EXAMPLES", *examples]
    if isinstance(command, Documented) and command.environment:
        out.append(".SH ENVIRONMENT")
        for var in command.environment:
            out += [".TP", f"\\fB{esc(var)}\\fR", esc(ENVIRONMENT[var])]
    if isinstance(command, Documented) and command.files:
        out.append(".SH FILES")
        for where, what in command.files:
            out += [".TP", f"\\fI{esc(_data_path(where))}\\fR", esc(what)]
    if len(path) == 1:
        out.append(".SH EXIT STATUS")
        for code, text in EXIT_STATUS:
            out += [".TP", f"\\fB{code}\\fR", esc(text)]
    related = [n for n in names if n != name and (len(path) == 1 or n.startswith(path[0]))]
    if len(path) > 1:
        related = [PROG, *(n for n in names if n.startswith(name + "-"))]
    if related:
        out += [".SH SEE ALSO", ",\n".join(f"\\fB{esc(n)}\\fR(1)" for n in related)]
    return "\n".join(out) + "\n"


def split_help(text: str) -> tuple[list[str], list[str]]:
    """click's help text in roff: paragraphs filled, \\b blocks kept as
    they are (.nf), an "Examples:" block moved to its own section."""
    description: list[str] = []
    examples: list[str] = []
    for para in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = para.splitlines()
        if not lines:
            continue
        verbatim = lines[0].strip() == "\b"
        if verbatim:
            lines = lines[1:]
        if lines and lines[0].strip().rstrip(":").lower() == "examples":
            examples += [".nf", *(esc(line.strip()) for line in lines[1:]), ".fi"]
        elif verbatim:
            description += [".PP", ".nf", *(esc(line) for line in lines), ".fi"]
        else:
            description += [".PP", esc(" ".join(line.strip() for line in lines))]
    return description, examples


def _option(opts: str) -> str:
    """'-c, --config FILE' -> bold option names, italic metavar."""
    words = []
    for word in opts.split(" "):
        bare = word.rstrip(",")
        style = "B" if bare.startswith("-") else "I"
        words.append(f"\\f{style}{esc(bare)}\\fR{word[len(bare) :]}")
    return " ".join(words)


def _data_path(where: object) -> str:
    """A file the command names, as the package data's path
    (dashboards/rules/config.yml): where an install has it differs."""
    try:
        path = where() if callable(where) else Path(str(where))
    except FileNotFoundError:
        return str(where)
    root = data_dir("dashboards").parent
    try:
        return f"{PROG} data: {Path(path).relative_to(root)}"
    except ValueError:
        return str(path)


def esc(text: str) -> str:
    """Text for roff: backslashes, hyphens (minus signs in options and
    commands), non-ASCII characters (as \\[uXXXX]) and a leading period or
    apostrophe escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    text = "".join(c if ord(c) < 128 else f"\\[u{ord(c):04X}]" for c in text)
    return "\n".join(
        "\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n")
    )


COMMANDS = (completion, man)
