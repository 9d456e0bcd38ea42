"""The exporter's HTTP server: /metrics from a CollectorRegistry, with the
web config's TLS and basic auth. Bound (socket created and listening) before
any BPF is loaded, so a port in use fails first and cleanly.

Connections are read by one asyncio loop, not a thread each: a client that
sends its request slowly, or never, holds a few KB and a timer, not one of
a few request slots, so Prometheus' scrapes are served meanwhile. A request
must arrive whole within HEAD_TIMEOUT; only then does it get a worker
(at most WORKERS: scrapes share the maps and one result, basic auth's bcrypt
is slow on purpose). Beyond MAX_CONNECTIONS open connections, a 503 at once.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import errno
import gzip
import html
import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from http import HTTPStatus
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from ..errors import PyprobeError
from ..logs import kv
from .textformat import OpenMetricsEncoder, TextEncoder
from .webconfig import WebConfig

log = logging.getLogger("pyprobe.exporter")
DEFAULT_ADDRESS = "127.0.0.1:9977"
DEFAULT_PATH = "/metrics"
LANDING = """<html><head><title>pyprobe exporter</title></head><body>
<h1>pyprobe exporter</h1><p><a href="{path}">Metrics</a></p></body></html>
"""
# What Prometheus (2.x, Debian 12's) sends with every scrape, captured: it
# asks for OpenMetrics first, and always for gzip. Both are served fast here;
# the bench and the tests scrape with these.
PROMETHEUS_HEADERS = {
    "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
    "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    "Accept-Encoding": "gzip",
}
GZIP_LEVEL = 1  # a scrape of ~400 series, ~29 KB, to ~5 KB in ~0.1 ms (9 takes 10x longer)
MAX_CONNECTIONS = 256  # open at once (idle, reading or served); more get 503 at once
WORKERS = 4  # requests being answered at once: threads, never more
HEAD_TIMEOUT = 5.0  # s for a request's line and headers (and TLS handshake) to arrive whole
IDLE_TIMEOUT = 120.0  # s a kept-alive connection may wait for its next request
MAX_LINE = 8192  # request line (longer: 414); a header line longer: 431
MAX_HEADERS = 100  # (more: 431)


def parse_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise PyprobeError(
            f"bad --web.listen-address {text!r}: expected HOST:PORT, e.g. {DEFAULT_ADDRESS}"
        )
    host = host.strip("[]")
    return host or "0.0.0.0", int(port)


def parse_path(text: str) -> str:
    """--web.telemetry-path: where /metrics is served instead."""
    if not text.startswith("/") or text == "/" or any(c.isspace() or c in "?#" for c in text):
        raise PyprobeError(
            f"bad --web.telemetry-path {text!r}: expected a path such as {DEFAULT_PATH} "
            "(not /, no spaces, ? or #)"
        )
    return text


def gzip_accepted(header: str) -> bool:
    """Accept-Encoding names gzip, and not with q=0 (Prometheus always sends
    "gzip")."""
    for item in header.split(","):
        coding, *params = (p.strip() for p in item.split(";"))
        if coding.lower() == "gzip":
            q = next((p[2:] for p in params if p.lower().startswith("q=")), "1")
            try:
                return float(q) > 0
            except ValueError:
                return False
    return False


class Refused(Exception):
    """A request answered with an error status, the connection then closed."""

    def __init__(self, status: HTTPStatus, extra: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(status.phrase)
        self.status, self.extra = status, extra


class Request:
    def __init__(self, method: str, target: str, version: str, headers: dict[str, str]):
        self.method, self.target, self.version, self.headers = method, target, version, headers

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.1":
            return "close" not in connection
        return "keep-alive" in connection


class Server:
    """Listens at once (a port in use is a PyprobeError here); serve_forever()
    runs the loop (the daemon runs it in a thread); shutdown() ends it,
    waiting for the requests being answered; server_close() lets the port go."""

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        config: WebConfig,
        path: str = DEFAULT_PATH,
    ):
        self.metrics_path = path
        self.landing = LANDING.format(path=html.escape(path)).encode()
        self.registry = registry
        self.text = TextEncoder()  # the plain text format (0.0.4)
        # OpenMetrics, what Prometheus asks for first: one per content type
        # (version, escaping) asked for, a few at most.
        self.openmetrics: dict[str, OpenMetricsEncoder] = {}
        self._config = config  # replaced whole on SIGHUP (the config setter)
        self.scrape_lock = threading.Lock()  # one scrape at a time reads the maps
        # (encoder, when the body was started, body): scrapes that queued
        # behind one in progress take its result if it began after they came.
        self._last: tuple[object, float, bytes] | None = None
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind(address)
            self.socket.listen(128)
        except OSError as e:
            self.socket.close()
            why = "port in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise PyprobeError(f"cannot listen on {address[0]}:{address[1]}: {why}") from None
        self.server_address = self.socket.getsockname()
        self.connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Event | None = None
        self._listening: asyncio.Server | None = None
        self._running = threading.Event()
        self._done = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="http")

    @property
    def config(self) -> WebConfig:
        return self._config

    @config.setter
    def config(self, config: WebConfig) -> None:
        """A new config (SIGHUP): new connections get its TLS from now on;
        those already open keep theirs."""
        self._config = config
        loop = self._loop
        if loop is not None and not self._done.is_set():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(lambda: loop.create_task(self._listen()))

    # -- life ------------------------------------------------------------------
    def serve_forever(self) -> None:
        try:
            asyncio.run(self._serve())
        finally:
            self._done.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopped = asyncio.Event()
        tasks: set[asyncio.Task] = set()

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await self._connection(reader, writer)
            finally:
                tasks.discard(task)

        self._accepted = accepted
        await self._listen()
        self._running.set()
        try:
            await self._stopped.wait()
        finally:
            if self._listening is not None:
                self._listening.close()
            # Connections waiting for a request, or for a slow client to read,
            # end now, quietly; one being answered finishes its answer first.
            for task in list(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _listen(self) -> None:
        """Accept with the config's TLS: a listener on a duplicate of our
        socket (closing it leaves ours open), in place of the last one.
        asyncio does the handshake (with TLS 1.3 and client certificates,
        starting TLS on a stream already read from lost the client's last
        flight: the handshake hung until its deadline)."""
        old = self._listening
        self._listening = await asyncio.start_server(
            self._accepted,
            sock=self.socket.dup(),
            limit=2 * MAX_LINE,
            ssl=self._config.tls,
            ssl_handshake_timeout=HEAD_TIMEOUT if self._config.tls else None,
        )
        if old is not None:
            old.close()

    def shutdown(self) -> None:
        """End serving; returns once the loop has ended."""
        loop, stopped = self._loop, self._stopped
        if loop is not None and stopped is not None and not self._done.is_set():
            with contextlib.suppress(RuntimeError):  # the loop ended meanwhile
                loop.call_soon_threadsafe(stopped.set)
            self._done.wait()
        self._pool.shutdown(wait=True)

    def server_close(self) -> None:
        self.socket.close()

    # -- connections -----------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.connections += 1
        try:
            if self.connections > MAX_CONNECTIONS:
                writer.write(_response(HTTPStatus.SERVICE_UNAVAILABLE, b"too many connections\n",
                                       extra=(("Retry-After", "1"),), keep=False))  # fmt: skip
                await _drain(writer, HEAD_TIMEOUT)
                return
            timeout = HEAD_TIMEOUT
            while True:
                try:
                    request = await asyncio.wait_for(_read_head(reader), timeout)
                except Refused as e:
                    body = f"{e.status.value} {e.status.phrase}\n".encode()
                    refused = [*self.config.headers.items(), *e.extra]
                    writer.write(_response(e.status, body, extra=refused, keep=False))
                    await _drain(writer, HEAD_TIMEOUT)
                    return
                if request is None:
                    return  # the client closed, between requests
                status, body, ctype, extra = await asyncio.get_running_loop().run_in_executor(
                    self._pool, self._answer, request
                )
                keep = request.keep_alive and status < 400
                head_only = request.method == "HEAD"
                extra = [*self.config.headers.items(), *extra]
                writer.write(_response(status, body, ctype, extra, keep, head_only))
                await _drain(writer, IDLE_TIMEOUT)
                if not keep:
                    return
                timeout = IDLE_TIMEOUT  # the next request may wait, as Prometheus' do
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError,
                OSError) as e:  # fmt: skip
            # A slow, silent or broken client, or a failed handshake: its own
            # business, not the daemon's (a debug line, never a traceback).
            log.debug("connection closed", extra=kv(peer=peer, why=type(e).__name__))
        except asyncio.CancelledError:
            pass  # shutting down
        finally:
            self.connections -= 1
            writer.transport.abort()  # no lingering close on a client that stopped reading

    def _answer(self, request: Request) -> tuple[int, bytes, str, list[tuple[str, str]]]:
        """A whole request's answer, in a worker thread (auth and scrapes block)."""
        text = "text/plain; charset=utf-8"
        if request.method not in ("GET", "HEAD"):
            return 405, b"405 Method Not Allowed\n", text, [("Allow", "GET, HEAD")]
        if not self._authorized(request):
            return 401, b"Unauthorized\n", text, [("WWW-Authenticate", 'Basic realm="pyprobe"')]
        path = request.target.split("?", 1)[0]
        if path == self.metrics_path:
            encoder, ctype = self.encoder(request.headers.get("accept", ""))
            body, extra = self.scrape(encoder), [("Vary", "Accept-Encoding")]
            if gzip_accepted(request.headers.get("accept-encoding", "")):
                body = gzip.compress(body, GZIP_LEVEL)
                extra.append(("Content-Encoding", "gzip"))
            return 200, body, ctype, extra
        if path == "/":
            return 200, self.landing, "text/html; charset=utf-8", []
        return 404, b"Not Found\n", text, []

    def _authorized(self, request: Request) -> bool:
        config = self.config
        if not config.users:
            return True
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return config.authorized(user, password)

    def encoder(self, accept: str) -> tuple[Any, str]:
        """The writer and content type for an Accept header: prometheus_client
        chooses (format, version, escaping); ours write the same bytes."""
        encoder, ctype = choose_encoder(accept)
        if encoder is generate_latest:
            return self.text, ctype
        if getattr(encoder, "func", encoder) is openmetrics.generate_latest:
            fast = self.openmetrics.get(ctype)
            if fast is None and len(self.openmetrics) < 8:  # content types come from clients
                fast = self.openmetrics[ctype] = OpenMetricsEncoder(encoder)
            return fast or encoder, ctype
        return encoder, ctype

    def scrape(self, encoder: Any) -> bytes:
        arrived = time.monotonic()
        with self.scrape_lock:
            last = self._last
            if last is not None and last[0] is encoder and last[1] >= arrived:
                return last[2]  # fresher than this request: computed while it waited
            started = time.monotonic()
            body: bytes = encoder(self.registry)
            self._last = (encoder, started, body)
            return body


async def _read_head(reader: asyncio.StreamReader) -> Request | None:
    """The request line and headers; None when the client closed before a
    request began. Bad ones raise Refused with their status."""
    line = await _line(reader, HTTPStatus.REQUEST_URI_TOO_LONG, first=True)
    if line is None:
        return None
    parts = line.split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise Refused(HTTPStatus.BAD_REQUEST)
    method, target, version = parts
    headers: dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        text = await _line(reader, HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
        if not text:
            return Request(method, target, version, headers)
        name, sep, value = text.partition(":")
        if not sep or not name or name != name.strip():
            raise Refused(HTTPStatus.BAD_REQUEST)
        headers[name.lower()] = value.strip()
    raise Refused(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)


async def _line(
    reader: asyncio.StreamReader, too_long: HTTPStatus, first: bool = False
) -> str | None:
    try:
        raw = await reader.readuntil(b"\n")
    except asyncio.LimitOverrunError:
        raise Refused(too_long) from None
    except asyncio.IncompleteReadError as e:
        if first and not e.partial:
            return None
        raise
    if len(raw) > MAX_LINE:
        raise Refused(too_long)
    try:
        return raw.decode("latin-1").rstrip("\r\n") if raw.isascii() else _bad()
    except UnicodeDecodeError:
        raise Refused(HTTPStatus.BAD_REQUEST) from None


def _bad() -> str:
    raise Refused(HTTPStatus.BAD_REQUEST)


def _response(
    status: int,
    body: bytes,
    ctype: str = "text/plain; charset=utf-8",
    extra: Any = (),
    keep: bool = True,
    head_only: bool = False,
) -> bytes:
    phrase = HTTPStatus(status).phrase
    lines = [
        f"HTTP/1.1 {status} {phrase}",
        "Server: pyprobe",
        f"Date: {formatdate(usegmt=True)}",
        f"Content-Type: {ctype}",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in extra),
    ]
    if not keep:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


async def _drain(writer: asyncio.StreamWriter, timeout: float) -> None:
    await asyncio.wait_for(writer.drain(), timeout)
