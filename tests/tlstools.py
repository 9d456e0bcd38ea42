"""Certificates made with openssl, a TLS server on 127.0.0.1 that wraps each
connection with a given context (as the exporter's server does) and says
how each handshake went, and the clients that talk to it: `openssl s_client`
(which shows the negotiated cipher, version and key-exchange group) and
Python's ssl."""

from __future__ import annotations

import contextlib
import queue
import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _ec_key_request(dir: Path, name: str, subject: str) -> None:
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", dir / f"{name}.key", "-out", dir / f"{name}.csr", "-subj", subject,
    )  # fmt: skip


def _sign(dir: Path, name: str, ca: str, extensions: str) -> None:
    (dir / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509", "-req", "-in", dir / f"{name}.csr", "-CA", dir / f"{ca}.pem",
        "-CAkey", dir / f"{ca}.key", "-CAcreateserial", "-days", "2",
        "-out", dir / f"{name}.pem", "-extfile", dir / f"{name}.ext",
    )  # fmt: skip


def make_certs(dir: Path) -> Path:
    """server.pem/key (RSA, for the ECDHE_RSA suites; self-signed), a CA
    (ca.pem) and clients: good (signed by the CA; SANs DNS scraper.example,
    IP 10.0.0.7, URI spiffe://example/scraper, email scraper@example.com),
    other (signed by the CA; DNS intruder.example only), rogue (self-signed,
    the good one's SANs: trusted by nobody)."""
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", dir / "server.key", "-out", dir / "server.pem", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    )  # fmt: skip
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-keyout", dir / "ca.key", "-out", dir / "ca.pem", "-subj", "/CN=test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    good_sans = (
        "DNS:scraper.example,IP:10.0.0.7,URI:spiffe://example/scraper,email:scraper@example.com"
    )
    client = "extendedKeyUsage=clientAuth\nsubjectAltName="
    _ec_key_request(dir, "good", "/CN=scraper")
    _sign(dir, "good", "ca", client + good_sans + "\n")
    _ec_key_request(dir, "other", "/CN=intruder")
    _sign(dir, "other", "ca", client + "DNS:intruder.example\n")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-days", "2", "-keyout", dir / "rogue.key", "-out", dir / "rogue.pem",
        "-subj", "/CN=scraper", "-addext", "subjectAltName=" + good_sans,
        "-addext", "extendedKeyUsage=clientAuth",
    )  # fmt: skip
    return dir


@dataclass
class Handshake:
    ok: bool
    version: str = ""
    cipher: str = ""
    peer: dict | None = None  # the client's certificate, as getpeercert() gives it
    error: str = ""


class HandshakeServer:
    """Accepts connections on 127.0.0.1 and wraps each with the context, as
    the exporter's server does (ctx.wrap_socket(sock, server_side=True));
    then writes "ok\\n" and closes. next() is how the last handshake went."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.results: queue.Queue[Handshake] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> HandshakeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone does not
        self.sock.close()
        self.thread.join(5)

    def next(self) -> Handshake:
        return self.results.get(timeout=10)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(5)
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except (ssl.SSLError, OSError) as e:
                conn.close()
                self.results.put(Handshake(False, error=str(e)))
                continue
            cipher = tls.cipher()
            self.results.put(
                Handshake(True, tls.version() or "", cipher[0] if cipher else "", tls.getpeercert())
            )
            try:
                tls.sendall(b"ok\n")
                tls.unwrap()
            except (ssl.SSLError, OSError):
                pass
            tls.close()


def s_client(port: int, *args: str) -> str:
    """What `openssl s_client -brief` says about a connection (stdout and
    stderr): "Protocol version: ...", "Ciphersuite: ...", "Server Temp Key: ..."."""
    proc = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-brief", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=20,
    )
    return proc.stdout + proc.stderr


def said(output: str, field: str) -> str:
    """A field of s_client -brief's output ("" when absent)."""
    for line in output.splitlines():
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
    return ""


def client_context(
    certs: Path | None = None,
    cert: str | None = None,
    tls: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A client that does not check the server (the server's policy is what
    is tested), with a client certificate from certs/ if named."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if tls is not None:
        ctx.minimum_version, ctx.maximum_version = tls
    if ciphers is not None:
        ctx.set_ciphers(ciphers)
    if cert is not None and certs is not None:
        ctx.load_cert_chain(certs / f"{cert}.pem", certs / f"{cert}.key")
    return ctx


def turned_away(port: int, ctx: ssl.SSLContext) -> bool:
    """Whether the server would not serve this client: the handshake failed
    (in TLS 1.3, at the first read), or the server closed without a word
    (a certificate it refused after the handshake)."""
    try:
        return talk(port, ctx) != b"ok\n"
    except (ssl.SSLError, OSError):
        return True


def talk(port: int, ctx: ssl.SSLContext) -> bytes:
    """Connects, reads what the server sends (b"ok\\n"), or raises: in TLS
    1.3 a refused client certificate shows only at the first read."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw) as tls,
    ):
        return tls.recv(16)
