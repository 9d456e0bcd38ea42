"""What every command shares: the context they run in (the registry of
probes, how the machine is read, how programs are loaded: injected, so the
tests give a fake), option types and decorators, attaching with the
command loader, and the checks of options that do not go together."""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from ..core.attach import attach_together
from ..core.native import NATIVE_ENV
from ..core.probe import Probe
from ..core.sizes import MAP_ENTRIES_ENV, RINGBUF_PAGES_DEFAULT, RINGBUF_PAGES_ENV
from ..errors import PyprobeError
from ..kernel import cgroups
from ..kernel.env import DISABLE_HOOKS_ENV, KernelEnv, mount_tracefs
from ..kernel.headers import BCC_KERNEL_SOURCE, bcc_tree
from ..kernel.host import HostPaths, use
from ..load.cache import DEFAULT_DIR, PROGRAM_CACHE_ENV
from ..load.compilers import CompilerLoader
from ..load.program import BatchLoader
from ..probes import Registry, default
from ..views import tables

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
MAX_SECONDS = 31 * 86400  # intervals and durations: a month is already absurd

# Settings that exist only in the environment. Each is listed in the --help
# of the commands it changes (an "Environment:" section, as bcc's tools and
# coreutils' man pages have), and `pyprobe doctor` prints those that are set.
ENVIRONMENT = {
    DISABLE_HOOKS_ENV: "Hook kinds never to use, comma-separated: tp_btf, raw_tracepoint, "
    "tracepoint, kprobe, or one hook as doctor names it (raw_tracepoint:kfree_skb).",
    MAP_ENTRIES_ENV: "Map sizes, PROBE.MAP=N comma-separated, e.g. netdev.devices=1024 "
    "(a front: 0 for none, or a power of two up to 4096).",
    PROGRAM_CACHE_ENV: f"Where compiled programs are kept (default {DEFAULT_DIR}); "
    "off: compile at every start.",
    RINGBUF_PAGES_ENV: f"A stream's ring buffer in 4 KiB pages, a power of two, where "
    f"-b is not given (default {RINGBUF_PAGES_DEFAULT}).",
    NATIVE_ENV: "off: a stream's -j lines are made in Python, not by the C formatter "
    "built at first use.",
    "CC": "The compiler that C formatter is built with (default cc).",
}
LOADING = (DISABLE_HOOKS_ENV, MAP_ENTRIES_ENV, PROGRAM_CACHE_ENV)  # every command that loads
STREAMING = (*LOADING, RINGBUF_PAGES_ENV, NATIVE_ENV, "CC")


def environment_set() -> dict[str, str]:
    """Those of ENVIRONMENT set here (empty counts: PYPROBE_PROGRAM_CACHE= is off)."""
    return {name: value for name, value in os.environ.items() if name in ENVIRONMENT}


class Documented(click.Command):
    """A command whose help ends with the environment variables it reads and
    the files it hands to other programs (paths looked up when the help is
    shown: where this install has them)."""

    def __init__(
        self,
        *args: Any,
        environment: Sequence[str] = (),
        files: Sequence[tuple[Callable[[], Path], str]] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.environment = tuple(environment)
        self.files = tuple(files)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_epilog(ctx, formatter)
        if self.environment:
            with formatter.section("Environment"):
                formatter.write_dl([(name, ENVIRONMENT[name]) for name in self.environment])
        if self.files:
            with formatter.section("Files"):
                formatter.write_dl([(_where(path), what) for path, what in self.files])


def _where(path: Callable[[], Path]) -> str:
    try:
        return str(path())
    except FileNotFoundError as e:  # a broken install: the help still shows
        return f"(missing: {e})"


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so `with probe:` blocks detach."""


def detect_env() -> KernelEnv:
    env = KernelEnv.detect()
    if env.tracefs is None:
        # Tracepoints need tracefs; mount it when we may (like bcc does for debugfs).
        env.tracefs = mount_tracefs(env.host)
    if env.headers_from_host:
        # The host's headers (--path.rootfs), for bcc here and in the compiler
        # processes, which inherit the environment: written, bcc reads it.
        os.environ.update({BCC_KERNEL_SOURCE: str(bcc_tree(env.host, env.release))})
    return env


@dataclass
class Context:
    """What the commands run with. Every command loads like the exporter:
    through compiler processes and the program cache (load/compilers.py,
    load/cache.py), so a kept program starts without clang and bcc's memory
    never enters this process (a stream's ring buffer comes back as an fd).
    host: where the host's /proc, /sys and / are (--path.*), installed for
    the process before the command runs (kernel/host.py)."""

    registry: Registry = field(default_factory=default)
    env: Callable[[], KernelEnv] = detect_env
    loader: Callable[[], BatchLoader] = CompilerLoader
    host: HostPaths = field(default_factory=HostPaths)


def context() -> Context:
    obj = click.get_current_context().find_object(Context)
    return obj if obj is not None else Context()


def complete_probes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of --probe: the probes, NAME.FEATURE and NAME.all."""
    obj = ctx.find_object(Context)
    registry = obj.registry if obj is not None else Context().registry
    names = []
    for name in registry.names():
        features = registry.manifests[name].features
        names += [name, *(f"{name}.{f.name}" for f in features)]
        names += [f"{name}.all"] if features else []
    return [n for n in names if n.startswith(incomplete)]


@contextmanager
def attached(
    name: str,
    buffer_pages: int | None = None,
    options: Mapping[str, Any] | None = None,
    features: Iterable[str] = (),
    cgroup: int | None = None,
    **attach: Any,
) -> Iterator[Any]:
    """A probe of the registry, configured with its plug-in's options and
    attached (with its stream, filters...) for the block, detached at its
    end however it ends."""
    ctx = context()
    loader = ctx.loader()
    chosen = ctx.registry.select([f"{name}.{f}" for f in features] or [name])[name]
    probe = ctx.registry.create(name, ctx.env(), loader, chosen)
    probe.ring_pages = buffer_pages
    probe.cgroup_filter = cgroup
    probe.configure(**(options or {}))
    with probe:
        try:
            probe.attach(**attach)
        finally:
            loader.close()
        yield probe


@contextmanager
def attached_many(
    names: list[str] | Mapping[str, frozenset[str] | None],
    streams: tuple[str, ...] = (),
    skip_unavailable: bool = False,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    optional: Collection[str] = (),
) -> Iterator[dict[str, Probe]]:
    """Several probes loaded together, like the exporter's (kept programs
    from the program cache, the rest compiled two at a time); detached at the
    block's end. skip_unavailable: a probe this kernel cannot run is left
    out (`top`: it shows what the kernel allows; doctor says why not).
    options: a probe's plug-in options, given before it is loaded (trace's
    filter). optional: probes that are left out when they fail to attach
    (`why`'s evidence beside the trace), not an error."""
    ctx = context()
    env = ctx.env()
    with ExitStack() as stack:
        probes: dict[str, Probe] = {}
        loader = ctx.loader()
        try:
            chosen = names if isinstance(names, Mapping) else dict.fromkeys(names)
            for name, features in chosen.items():
                probe = stack.enter_context(ctx.registry.create(name, env, loader, features))
                if options and name in options:
                    probe.configure(**options[name])
                if skip_unavailable and probe.runs_here(name in streams)[0] is None:
                    continue
                probes[name] = probe
            errors = attach_together(probes, loader, streams=streams)
        finally:
            loader.close()
        for name in [n for n in errors if n in optional]:
            del errors[name], probes[name]
        if errors:
            raise next(iter(errors.values()))
        yield probes


HOST_PATHS = (
    (
        "--path.procfs",
        "/proc",
        "The host's procfs: the kernel's counters (softirqs, stat, net/softnet_stat), "
        "kallsyms, every process's ns/net and fd (namespaces, socket owners). This "
        "process's own capabilities and namespace are read from its own /proc.",
    ),
    (
        "--path.sysfs",
        "/sys",
        "The host's sysfs: kernel/btf/vmlinux, kernel/tracing (tracepoint formats; "
        "mounted there when missing), fs/cgroup (the cgroup v2 tree). bcc attaches "
        "classic tracepoints through this process's own /sys/kernel/tracing.",
    ),
    (
        "--path.rootfs",
        "/",
        "The host's root: its /run/netns (namespace names), /var/lib/kubelet/pods (pod "
        "names) and /lib/modules (kernel headers: where this process has none, bcc is "
        "given the host's).",
    ),
)


def _host_path(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--path.X given: checked now (a wrong one is one line and exit 2,
    before any program is loaded or port bound) and in use from now on."""
    if value is None:
        return
    obj = ctx.ensure_object(Context)
    obj.host = obj.host.with_flag(param.opts[0], value)
    use(obj.host)


def host_path_options(f: Any) -> Any:
    """--path.procfs, --path.sysfs, --path.rootfs (node_exporter's names)."""
    for flag, fallback, text in reversed(HOST_PATHS):
        f = click.option(
            flag,
            flag.replace(".", "_").lstrip("-"),
            metavar="PATH",
            expose_value=False,
            callback=_host_path,
            help=f"{text}  [default: {fallback}]",
        )(f)
    return f


class Seconds(click.ParamType):
    """A positive, finite number of seconds (click's FloatRange lets nan and
    inf through, and time.sleep() then raises)."""

    name = "seconds"

    def __init__(self, minimum: float = 0.0, zero: bool = False) -> None:
        self.minimum = minimum
        self.zero = zero  # 0 allowed too (a setting whose 0 means "never")

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        try:
            n = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (
            self.minimum < n <= MAX_SECONDS
            or (self.minimum and n == self.minimum)
            or (self.zero and n == 0)
        ):
            low = f"at least {self.minimum:g}" if self.minimum else "above 0"
            self.fail(f"{value!r} is out of range: {low} and at most {MAX_SECONDS}", param, ctx)
        return n


SECONDS = Seconds()
SECONDS_OR_NEVER = Seconds(zero=True)  # 0: never
COUNT = click.IntRange(1, 10**9)


def buffer_pages_option(f: Any) -> Any:
    return click.option(
        "-b",
        "--buffer-pages",
        type=click.IntRange(1, 1 << 18),
        help="Ring buffer size in 4 KiB pages, a power of two "
        f"(default {RINGBUF_PAGES_DEFAULT} = 16 MiB, or ${RINGBUF_PAGES_ENV}).",
    )(f)


def json_option(f: Any) -> Any:
    return click.option("-j", "--json", "as_json", is_flag=True, help="NDJSON output.")(f)


FORMATS = ("table", "plain", "json")


def format_option(f: Any) -> Any:
    """--format table|plain|json for a command that prints tables, -j/--json
    an alias of --format json. The command still takes as_json; tables print
    box-drawn on a terminal and as plain columns when piped, unless --format
    says which (views/tables.STYLE, for the process)."""

    @functools.wraps(f)
    def command(*args: Any, output_format: str | None = None, **kwargs: Any) -> Any:
        tables.STYLE = output_format if output_format in tables.STYLES else "auto"
        return f(*args, as_json=output_format == "json", **kwargs)

    command = click.option(
        "-j", "--json", "output_format", flag_value="json", help="NDJSON: --format json."
    )(command)
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        help="table: box-drawn (the default on a terminal); plain: aligned columns, "
        "one line per row (the default when piped); json: NDJSON, a line per report.",
    )(command)


def netns_option(f: Any) -> Any:
    return click.option(
        "--netns", help="Only this network namespace: inode or name under /run/netns."
    )(f)


def cgroup_options(f: Any) -> Any:
    """--cgroup PATH and --container ID: only sockets in that cgroup (or
    below it), filtered in the program; resolve with cgroup_filter()."""
    f = click.option(
        "--container",
        metavar="ID",
        help="Only sockets of this container: its id or a prefix (4+ hex digits), "
        "optionally runtime:ID (podman, docker, containerd, cri-o).",
    )(f)
    return click.option(
        "--cgroup",
        metavar="PATH",
        help="Only sockets in this cgroup or below it: its path under the cgroup v2 root.",
    )(f)


def cgroup_filter(cgroup: str | None, container: str | None) -> int | None:
    """--cgroup/--container -> the cgroup's id for the program's filter; a
    one-line error when there is no such cgroup."""
    if cgroup is None and container is None:
        return None
    if cgroup is not None and container is not None:
        raise PyprobeError("--cgroup and --container: one or the other")
    if not cgroups.available():
        raise PyprobeError("--cgroup/--container: no cgroup v2 hierarchy is mounted here")
    table = cgroups.Cgroups()
    if cgroup is not None:
        found = table.by_path(cgroup)
        if found is None:
            raise PyprobeError(f"--cgroup {cgroup}: no such cgroup under {table.root}")
    else:
        assert container is not None
        matches = table.by_container(container)
        if len(container.rpartition(":")[2]) < 4 or not matches:
            raise PyprobeError(
                f"--container {container}: no running container's id starts with it "
                f"(cgroups under {table.root}; give 4 or more hex digits)"
            )
        names = sorted({cg.container for cg in matches})
        if len(names) > 1:
            raise PyprobeError(f"--container {container}: matches {', '.join(names)}")
        found = matches[0]
    return found.id


def interval_args(f: Any) -> Any:
    f = click.argument("count", required=False, type=COUNT)(f)
    return click.argument("interval", required=False, type=SECONDS)(f)


def top_option(f: Any = None, default: int = 20, help: str = "Rows per table.") -> Any:
    """-n/--top N; as @top_option, or @top_option(default=..., help=...)."""
    option = click.option(
        "-n", "--top", default=default, show_default=True, type=click.IntRange(1, 100000), help=help
    )
    return option if f is None else option(f)


DURATION = click.option(
    "-d", "--duration", type=SECONDS, help="Stop the stream after this many seconds."
)


def stream_options(f: Any) -> Any:
    f = buffer_pages_option(f)
    f = DURATION(f)
    f = click.option("-T", "--timestamp", is_flag=True, help="Prefix lines with HH:MM:SS.")(f)
    return click.option("--stream", is_flag=True, help="One line per event instead of counts.")(f)


def stream_takes_no_interval(interval: float | None) -> None:
    if interval is not None:
        raise PyprobeError("INTERVAL/COUNT go with counts; use -d/--duration with --stream")


def counts_take_no_stream_options(
    timestamp: bool, duration: float | None, buffer_pages: int | None, stream: str = "--stream"
) -> None:
    # Silently ignored, -d would leave a count running until Ctrl-C.
    given = [
        flag
        for flag, value in (("-d/--duration", duration), ("-b/--buffer-pages", buffer_pages))
        if value is not None
    ] + (["-T/--timestamp"] if timestamp else [])
    if given:
        raise PyprobeError(f"{', '.join(given)}: only with {stream} (counts take INTERVAL COUNT)")


def socket_filters(ports: Callable[..., Any], formats: bool = False) -> Callable[[Any], Any]:
    """The filters bcc's tcpstates and tcplife take, compiled into the
    program; ports(ctx, param, text) parses a port list. formats: the
    command also prints tables (--format, -j its alias), not only a stream."""
    return lambda f: _socket_filters(f, ports, formats)


def _socket_filters(f: Any, ports: Callable[..., Any], formats: bool) -> Any:
    options: list[Callable[[Any], Any]] = [
        click.option(
            "-p",
            "--pid",
            type=click.IntRange(1, 1 << 22),
            help="Only this process (the socket owner).",
        ),
        click.option(
            "-L",
            "--localport",
            "lports",
            callback=ports,
            help="Only these local ports: 80,443.",
        ),
        click.option(
            "-D", "--remoteport", "dports", callback=ports, help="Only these remote ports."
        ),
        click.option("-4", "--ipv4", "family", flag_value=socket.AF_INET, help="Only IPv4."),
        click.option("-6", "--ipv6", "family", flag_value=socket.AF_INET6, help="Only IPv6."),
        netns_option,
        cgroup_options,
        format_option
        if formats
        else click.option(
            "-j", "--json", "as_json", is_flag=True, help="NDJSON, one object per line."
        ),
        click.option("-T", "--timestamp", is_flag=True, help="Prefix each line with HH:MM:SS."),
    ]
    for option in reversed(options):
        f = option(f)
    return f
