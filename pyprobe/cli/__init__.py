"""pyprobe's command line: the entry point registers the command families
(one module each in this package) and a command per probe made from its
manifest (cli/counting.py) for every probe without a command of its own.

Commands are imported when invoked or listed (click's lazy group pattern):
`pyprobe drops` does not pay for the exporter's or the lab's imports.

Every failure a user can cause or fix is one line on stderr and exit 2;
Ctrl-C exits 130, SIGTERM 143; probes detach on every path.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any

import click

from .. import __version__
from ..errors import PyprobeError
from ..kernel import host
from ..probes import Registry
from .common import CONTEXT, Context, Terminated, host_path_options

# command -> the module (in this package) that defines it, as COMMANDS
FAMILIES = {
    "list": "inspect",
    "doctor": "inspect",
    "compile": "inspect",
    "dashboard": "inspect",
    "rules": "inspect",
    "tcpstates": "tcpstates",
    "tcplife": "tcpstates",
    "queues": "queues",
    "conn": "conn",
    "nat": "nat",
    "bridge": "bridge",
    "route-changes": "routechanges",
    "trace": "trace",
    "why": "why",
    "top": "top",
    "export": "export",
    "lab": "lab",
    "demo": "demo",
    "completion": "manual",
    "man": "manual",
}


class Commands(click.Group):
    """The families' commands and one per probe, each made when first asked for."""

    def __init__(self, registry: Registry | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.registry = registry

    def _registry(self, ctx: click.Context) -> Registry:
        if self.registry is not None:
            return self.registry
        obj = ctx.find_object(Context)
        return obj.registry if obj is not None else Context().registry

    def list_commands(self, ctx: click.Context) -> list[str]:
        probes = self._registry(ctx).names()
        return sorted({*FAMILIES, *probes})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        family = FAMILIES.get(name)
        if family is not None:
            module = importlib.import_module(f"{__name__}.{family}")
            return next(c for c in module.COMMANDS if c.name == name)
        registry = self._registry(ctx)
        if name in registry.manifests:
            counting = importlib.import_module(f"{__name__}.counting")
            return counting.probe_command(registry, name)
        return None


@click.group(cls=Commands, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="pyprobe")
@host_path_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Linux network observability on eBPF: TCP states, queues, drops, softirqs, NAPI.

    \b
    Examples:
      pyprobe doctor                 # what this kernel allows, and which hook each probe uses
      pyprobe tcpstates              # stream every TCP state change
      pyprobe tcpstates --summary 5  # transition counts and live sockets, every 5 s
      pyprobe --path.procfs /host/proc --path.sysfs /host/sys queues
                                     # in a container: the host's /proc and /sys mounted there
    """
    # The host paths every command reads (the --path.* options above, or
    # those the caller's Context was given), for the whole process.
    host.use(ctx.ensure_object(Context).host)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def run() -> None:
    """The `pyprobe` program: main(), and the process ends with it, its
    signal handlers too (a SIGINT ignored after the first Ctrl-C stays so
    until the exit, views/watch.ctrl_c_ends)."""
    main(restore=False)


def main(
    argv: list[str] | None = None, context: Context | None = None, restore: bool = True
) -> None:
    """The `pyprobe` command. context: what the commands run with (the
    tests give a fake loader and machine, or another tree of probes)."""
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    interrupt = signal.getsignal(signal.SIGINT)
    paths = host.host()
    try:
        _run(argv, context or Context())
    finally:
        # Callers that outlive main() (tests, embedding) and processes forked
        # from them must not inherit our handlers, nor our host paths.
        if restore:
            signal.signal(signal.SIGTERM, previous)
            signal.signal(signal.SIGINT, interrupt)
            host.use(paths)


def _run(argv: list[str] | None, context: Context) -> None:
    try:
        cli.main(args=argv, prog_name="pyprobe", standalone_mode=False, obj=context)
    except PyprobeError as e:
        _fail(str(e), e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        _fail(e.format_message() + f" (see {_help_for(e, argv, context)})", 2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Terminated:
        sys.exit(143)
    except PermissionError as e:
        # Last resort: a path we may not read, named, instead of a traceback.
        _fail(f"permission denied: {e.filename or e}: run as root (or with CAP_BPF+CAP_PERFMON)", 2)
    except BrokenPipeError:
        # `pyprobe ... | head`: the reader left; not an error.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)


def _help_for(e: click.ClickException, argv: list[str] | None, context: Context) -> str:
    """The help of the command that refused the input: `pyprobe lab up
    --help`, not the group's, for `pyprobe lab up bridge`."""
    ctx = getattr(e, "ctx", None)  # usage errors know their command
    if ctx is not None:
        return f"{ctx.command_path} --help"
    args = argv if argv is not None else sys.argv[1:]
    first = next((a for a in args if not a.startswith("-")), None)
    known = {*FAMILIES, *context.registry.names()}
    return f"pyprobe {first} --help" if first in known else "pyprobe --help"


def _fail(message: str, code: int) -> None:
    print(f"pyprobe: error: {message}", file=sys.stderr)
    sys.exit(code)


if __name__ == "__main__":
    main()
