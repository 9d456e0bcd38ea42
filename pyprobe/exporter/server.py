"""The exporter's HTTP server: /metrics from a CollectorRegistry, with the
web config's TLS and basic auth. Bound (socket created and listening) before
any BPF is loaded, so a port in use fails first and cleanly."""

from __future__ import annotations

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
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics

from ..errors import PyprobeError
from .textformat import OpenMetricsEncoder, TextEncoder
from .webconfig import WebConfig

log = logging.getLogger("pyprobe.exporter")
DEFAULT_ADDRESS = "127.0.0.1:9977"
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 21\r\nRetry-After: 1\r\nConnection: close\r\n\r\n"
    b"too many connections\n"
)
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


MAX_CONNECTIONS = 32  # served at once; more get 503 at once, not a thread each


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        registry: CollectorRegistry,
        config: WebConfig,
        path: str = DEFAULT_PATH,
    ):
        self.metrics_path = path
        self.landing = LANDING.format(path=html.escape(path)).encode()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.registry = registry
        self.text = TextEncoder()  # the plain text format (0.0.4)
        # OpenMetrics, what Prometheus asks for first: one per content type
        # (version, escaping) asked for, a few at most.
        self.openmetrics: dict[str, OpenMetricsEncoder] = {}
        self.config = config  # replaced whole on SIGHUP; read once per request
        self.scrape_lock = threading.Lock()  # one scrape at a time reads the maps
        # (encoder, when the body was started, body): scrapes that queued
        # behind one in progress take its result if it began after they came.
        self._last: tuple[object, float, bytes] | None = None
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        try:
            super().__init__(address, Handler)
        except OSError as e:
            why = "port in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise PyprobeError(f"cannot listen on {address[0]}:{address[1]}: {why}") from None

    def process_request(self, request: Any, client_address: Any) -> None:
        # In the accept loop: over the limit, answer 503 and close, without
        # a thread (a flood of connections cannot grow the daemon).
        if not self.slots.acquire(blocking=False):
            with contextlib.suppress(OSError):
                request.sendall(BUSY)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

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

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshakes happen here, in the connection's thread, so a slow or
        # hostile client cannot stall the accept loop.
        ctx = self.config.tls
        if ctx is not None:
            request.settimeout(10)
            try:
                request = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as e:
                log.debug("tls handshake failed from %s: %s", client_address, e)
                return
        super().finish_request(request, client_address)


class Handler(BaseHTTPRequestHandler):
    server: Server
    timeout = 10  # per connection: no slowloris
    server_version = "pyprobe"
    sys_version = ""
    # Garbage gets a real status line (HTTP/0.9 would answer without one),
    # and errors are one plain line, not an HTML page.
    default_request_version = "HTTP/1.0"
    error_content_type = "text/plain; charset=utf-8"
    error_message_format = "%(code)d %(message)s\n"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def _send(
        self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8", extra=()
    ) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (*self.server.config.headers.items(), *extra):
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _authorized(self) -> bool:
        config = self.server.config
        if not config.users:
            return True
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(token, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return config.authorized(user, password)

    def do_GET(self) -> None:
        if not self._authorized():
            self._send(
                401, b"Unauthorized\n", extra=[("WWW-Authenticate", 'Basic realm="pyprobe"')]
            )
            return
        path = self.path.split("?", 1)[0]
        if path == self.server.metrics_path:
            encoder, ctype = self.server.encoder(self.headers.get("Accept", ""))
            body, extra = self.server.scrape(encoder), [("Vary", "Accept-Encoding")]
            if gzip_accepted(self.headers.get("Accept-Encoding", "")):
                body = gzip.compress(body, GZIP_LEVEL)
                extra.append(("Content-Encoding", "gzip"))
            self._send(200, body, ctype, extra)
        elif path == "/":
            self._send(200, self.server.landing, "text/html; charset=utf-8")
        else:
            self._send(404, b"Not Found\n")

    do_HEAD = do_GET

    def _refuse(self) -> None:
        self._send(405, b"Method Not Allowed\n", extra=[("Allow", "GET, HEAD")])

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse
