"""The web config's TLS settings, each honoured exactly or refused: a TLS
server on 127.0.0.1 wraps connections with the context webconfig builds,
and `openssl s_client` or Python's ssl says what was negotiated."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pyprobe.exporter import tlsconfig, webconfig
from pyprobe.exporter.server import Server
from tests.tlstools import (
    HandshakeServer,
    client_context,
    make_certs,
    s_client,
    said,
    talk,
    turned_away,
)

TLS12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
TLS13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


def load(certs: Path, tls: str = "", top: str = "") -> webconfig.WebConfig:
    """A config in certs/ (relative paths resolve there) with the server's
    certificate and these extra tls_server_config lines."""
    text = "tls_server_config:\n  cert_file: server.pem\n  key_file: server.key\n" + tls + top
    path = certs / "web.yml"
    path.write_text(text)
    return webconfig.load(path)


def context(certs: Path, tls: str = "") -> ssl.SSLContext:
    ctx = load(certs, tls).tls
    assert ctx is not None
    return ctx


def refused(certs: Path, tls: str = "", top: str = "") -> str:
    """The one line a refused config gets (it names the file)."""
    with pytest.raises(webconfig.ConfigError) as e:
        load(certs, tls, top)
    message = str(e.value)
    assert message.startswith(f"{certs / 'web.yml'}: ") and "\n" not in message, message
    return message


# -- versions and cipher suites ----------------------------------------------------------
REPORTED = (  # the configuration of the report: TLS 1.2 only, one suite
    "  min_version: TLS12\n  max_version: TLS12\n"
    "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n"
)


def test_cipher_suites_are_the_only_ones_tls12_negotiates(certs):
    with HandshakeServer(context(certs, REPORTED)) as server:
        # The report: this client got ECDHE-RSA-CHACHA20-POLY1305.
        out = s_client(server.port, "-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305")
        assert "CONNECTION ESTABLISHED" not in out, out
        assert not server.next().ok
        # A client offering everything gets the one suite configured.
        out = s_client(server.port, "-tls1_2")
        assert said(out, "Ciphersuite") == "ECDHE-RSA-AES128-GCM-SHA256", out
        assert server.next().cipher == "ECDHE-RSA-AES128-GCM-SHA256"


def test_the_tls12_ciphers_are_exactly_the_configured_ones_in_order(certs):
    ctx = context(
        certs,
        "  cipher_suites:\n"
        "    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n"
        "    - TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256\n"
        "    - TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA\n",
    )
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    assert tls12 == [
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-SHA",
    ]


def test_without_cipher_suites_tls12_has_gos_defaults_not_rsa_key_exchange(certs):
    """The toolkit's default is Go's: ECDHE suites only. OpenSSL's default
    list would also take RSA key exchange (no forward secrecy) and DHE."""
    ctx = context(certs)
    tls12 = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    assert tls12 == list(tlsconfig.SUITES.values())
    with HandshakeServer(ctx) as server:
        out = s_client(
            server.port, "-tls1_2", "-cipher", "AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256"
        )
        assert "CONNECTION ESTABLISHED" not in out, out
        assert not server.next().ok


def test_max_version_tls12_refuses_a_tls13_only_client(certs):
    with HandshakeServer(context(certs, "  max_version: TLS12\n")) as server:
        with pytest.raises(ssl.SSLError):
            talk(server.port, client_context(tls=TLS13))
        assert not server.next().ok
        assert talk(server.port, client_context()) == b"ok\n"  # offers 1.2 and 1.3
        assert server.next().version == "TLSv1.2"


def test_min_version_tls13_refuses_a_tls12_only_client(certs):
    with HandshakeServer(context(certs, "  min_version: TLS13\n")) as server:
        with pytest.raises(ssl.SSLError):
            talk(server.port, client_context(tls=TLS12))
        assert not server.next().ok
        assert talk(server.port, client_context()) == b"ok\n"
        assert server.next().version == "TLSv1.3"


def test_tls13_still_negotiates_its_own_suites_with_cipher_suites_set(certs):
    """cipher_suites are TLS 1.2's, as in Go: TLS 1.3 keeps its suites."""
    with HandshakeServer(
        context(certs, "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA]\n")
    ) as server:
        assert talk(server.port, client_context(tls=TLS13)) == b"ok\n"
        assert server.next().cipher.startswith("TLS_")


CLIENT_ORDER = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
SERVER_ORDER = (
    "  cipher_suites:\n"
    "    - TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384\n"
    "    - TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n"
)


@pytest.mark.parametrize(
    ("prefer", "chosen"),
    [
        ("", "ECDHE-RSA-AES256-GCM-SHA384"),  # Go's default: true, the server's order
        ("  prefer_server_cipher_suites: true\n", "ECDHE-RSA-AES256-GCM-SHA384"),
        ("  prefer_server_cipher_suites: false\n", "ECDHE-RSA-AES128-GCM-SHA256"),
    ],
)
def test_prefer_server_cipher_suites_decides_whose_order_wins(certs, prefer, chosen):
    with HandshakeServer(context(certs, SERVER_ORDER + prefer)) as server:
        talk(server.port, client_context(tls=TLS12, ciphers=CLIENT_ORDER))
        assert server.next().cipher == chosen


# -- curves --------------------------------------------------------------------------------
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_a_single_curve_is_the_only_group_negotiated(certs, version):
    with HandshakeServer(context(certs, "  curve_preferences: [CurveP384]\n")) as server:
        # offered first, X25519 would be chosen by default
        out = s_client(server.port, version, "-groups", "X25519:P-256:P-384")
        assert said(out, "Server Temp Key").startswith("ECDH, secp384r1"), out
        assert server.next().ok
        out = s_client(server.port, version, "-groups", "X25519:P-256")
        assert "CONNECTION ESTABLISHED" not in out, out
        assert not server.next().ok


# -- client certificates -------------------------------------------------------------------
MTLS = "  client_ca_file: ca.pem\n  client_auth_type: {}\n"


def test_require_and_verify_client_cert(certs):
    ctx = context(certs, MTLS.format("RequireAndVerifyClientCert"))
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    with HandshakeServer(ctx) as server:
        for client in (None, "rogue"):  # no certificate; one the CA did not sign
            with pytest.raises((ssl.SSLError, OSError)):
                talk(server.port, client_context(certs, client))
            assert not server.next().ok, client
        assert talk(server.port, client_context(certs, "good")) == b"ok\n"
        peer = server.next().peer
        assert peer is not None and ("DNS", "scraper.example") in peer["subjectAltName"]


def test_verify_client_cert_if_given(certs):
    ctx = context(certs, MTLS.format("VerifyClientCertIfGiven"))
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    with HandshakeServer(ctx) as server:
        assert talk(server.port, client_context(certs)) == b"ok\n"
        assert server.next().ok
        assert talk(server.port, client_context(certs, "good")) == b"ok\n"
        assert server.next().peer
        with pytest.raises((ssl.SSLError, OSError)):
            talk(server.port, client_context(certs, "rogue"))
        assert not server.next().ok


def test_no_client_cert_asks_for_none(certs):
    with HandshakeServer(context(certs, "  client_auth_type: NoClientCert\n")) as server:
        assert talk(server.port, client_context(certs, "rogue")) == b"ok\n"
        assert server.next().peer in (None, {})


def test_client_ca_inline_is_the_same_as_the_file(certs):
    pem = (certs / "ca.pem").read_text().replace("\n", "\n    ")
    ctx = context(
        certs, f"  client_auth_type: RequireAndVerifyClientCert\n  client_ca: |\n    {pem}\n"
    )
    with HandshakeServer(ctx) as server:
        assert talk(server.port, client_context(certs, "good")) == b"ok\n"
        assert server.next().ok
        with pytest.raises((ssl.SSLError, OSError)):
            talk(server.port, client_context(certs, "rogue"))
        assert not server.next().ok


@pytest.mark.parametrize(
    ("allowed", "accepted"),
    [
        ("[scraper.example]", {"good"}),
        ("['10.0.0.7']", {"good"}),
        ("['spiffe://example/scraper']", {"good"}),
        ("[scraper@example.com]", {"good"}),
        ("[intruder.example, nobody.example]", {"other"}),
        ("[scraper]", set()),  # the common name is not a SAN
    ],
)
def test_client_allowed_sans(certs, allowed, accepted):
    ctx = context(
        certs, MTLS.format("RequireAndVerifyClientCert") + f"  client_allowed_sans: {allowed}\n"
    )
    with HandshakeServer(ctx) as server:
        for client in ("good", "other"):
            if client in accepted:
                assert talk(server.port, client_context(certs, client)) == b"ok\n"
                assert server.next().ok
            else:
                assert turned_away(server.port, client_context(certs, client))
                result = server.next()
                assert not result.ok and "SAN" in result.error, result


@pytest.mark.parametrize("first", ["read", "send"])
def test_client_allowed_sans_when_the_handshake_happens_in_the_first_read_or_send(certs, first):
    """A server that wraps without shaking hands (do_handshake_on_connect=
    False) and never calls do_handshake(): OpenSSL shakes hands inside its
    first read or write, and the SANs are checked there."""
    ctx = context(
        certs,
        MTLS.format("RequireAndVerifyClientCert") + "  client_allowed_sans: [intruder.example]\n",
    )

    def exchange(client: str) -> tuple[bytes, str]:
        outcome: list[str] = []
        with socket.create_server(("127.0.0.1", 0)) as listener:

            def serve() -> None:
                conn, _ = listener.accept()
                conn.settimeout(5)
                with ctx.wrap_socket(conn, server_side=True, do_handshake_on_connect=False) as tls:
                    try:
                        if first == "read":
                            tls.recv(16)
                        tls.sendall(b"ok\n")
                        if first == "send":
                            tls.recv(16)  # closed with it unread, the client could get a reset
                        outcome.append("served")
                    except (ssl.SSLError, OSError) as e:
                        outcome.append(str(e))

            thread = threading.Thread(target=serve)
            thread.start()
            try:
                with (
                    socket.create_connection(listener.getsockname(), timeout=5) as raw,
                    client_context(certs, client).wrap_socket(raw) as tls,
                ):
                    tls.sendall(b"hi\n")
                    got = tls.recv(16)
            except (ssl.SSLError, OSError):
                got = b""
            thread.join(5)
        return got, outcome[0]

    assert exchange("other") == (b"ok\n", "served")
    got, outcome = exchange("good")
    assert got == b"" and "none of the allowed SANs" in outcome


@pytest.mark.parametrize("implicit", [False, True])
def test_client_allowed_sans_through_memory_bios(certs, implicit):
    """The same check where a server drives TLS over memory BIOs (asyncio
    does): the context's SSLObject checks too, whether the server calls
    do_handshake() or lets its first read shake hands."""
    ctx = context(
        certs,
        MTLS.format("RequireAndVerifyClientCert") + "  client_allowed_sans: [intruder.example]\n",
    )

    def exchange(client_cert: str) -> bytes:
        """What the server reads of the client's first bytes."""
        server_in, server_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        client_in, client_out = ssl.MemoryBIO(), ssl.MemoryBIO()
        server = ctx.wrap_bio(server_in, server_out, server_side=True)
        client = client_context(certs, client_cert).wrap_bio(client_in, client_out)
        client_done = False
        for _ in range(10):
            if not client_done:
                with contextlib.suppress(ssl.SSLWantReadError):
                    client.do_handshake()
                    client_done = True
                    client.write(b"hi")
            with contextlib.suppress(ssl.SSLWantReadError):
                if not implicit:
                    server.do_handshake()  # once done, returns at once
                if received := server.read(16):
                    return received
            server_in.write(client_out.read())
            client_in.write(server_out.read())
        raise AssertionError("no exchange in 10 rounds")

    assert exchange("other") == b"hi"
    with pytest.raises(ssl.SSLError, match="none of the allowed SANs"):
        exchange("good")


def test_client_allowed_sans_through_asyncio(certs):
    """An asyncio server (its SSL transport drives an SSLObject from the
    context's wrap_bio) serves the allowed client only."""
    ctx = context(
        certs,
        MTLS.format("RequireAndVerifyClientCert") + "  client_allowed_sans: [intruder.example]\n",
    )
    served: list[str] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        served.append(dict(peer["subjectAltName"])["DNS"])
        writer.write(b"ok\n")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> dict[str, bool]:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx)
        port = server.sockets[0].getsockname()[1]
        away = {}
        for client in ("other", "good", "rogue"):
            away[client] = await asyncio.to_thread(turned_away, port, client_context(certs, client))
        server.close()
        await server.wait_closed()
        return away

    assert asyncio.run(main()) == {"other": False, "good": True, "rogue": True}
    assert served == ["intruder.example"]


# -- refusals: each one line, naming the file, the key and why ---------------------------
@pytest.mark.parametrize(
    ("tls", "message"),
    [
        # versions
        ("  min_version: TLS11\n", "min_version: 'TLS11' not allowed"),
        ("  max_version: TLS10\n", "max_version: 'TLS10' not allowed"),
        ("  min_version: SSL3\n", "min_version: 'SSL3' not allowed"),
        (
            "  min_version: TLS13\n  max_version: TLS12\n",
            "min_version TLS13 is above max_version TLS12",
        ),
        # cipher suites
        (
            "  cipher_suites: TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\n",
            "cipher_suites: expected a list",
        ),
        ("  cipher_suites: [TLS_NOPE]\n", "cipher_suites: unknown cipher suite TLS_NOPE"),
        ("  cipher_suites: [ECDHE-RSA-AES128-GCM-SHA256]\n", "unknown cipher suite ECDHE-RSA"),
        (
            "  cipher_suites: [TLS_RSA_WITH_RC4_128_SHA]\n",
            "cipher_suites: TLS_RSA_WITH_RC4_128_SHA is insecure",
        ),
        (
            "  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256]\n",
            "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256 is insecure",
        ),
        (
            "  cipher_suites: [TLS_RSA_WITH_AES_128_GCM_SHA256]\n",
            "TLS_RSA_WITH_AES_128_GCM_SHA256 is insecure",
        ),
        (
            "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "TLS_AES_128_GCM_SHA256 is a TLS 1.3 suite; TLS 1.3 suites are not configurable",
        ),
        (
            "  min_version: TLS13\n  cipher_suites: [TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]\n",
            "cipher_suites apply to TLS 1.2 only, and min_version is TLS13",
        ),
        (
            "  prefer_server_cipher_suites: maybe\n",
            "prefer_server_cipher_suites: expected true or false",
        ),
        # curves
        ("  curve_preferences: [CurveP256, CurveP384]\n", "cannot apply an ordered list"),
        ("  curve_preferences: [X25519]\n", "X25519 alone cannot be set"),
        ("  curve_preferences: [CurveP999]\n", "curve_preferences: unknown curve CurveP999"),
        ("  curve_preferences: CurveP256\n", "curve_preferences: expected a list"),
        # client certificates
        (
            "  client_auth_type: RequireAnyClientCert\n",
            "RequireAnyClientCert: requiring a client certificate without verifying it is not "
            "supported",
        ),
        (
            "  client_auth_type: RequireClientCert\n",
            "RequireClientCert: requiring a client certificate without verifying it is not "
            "supported",
        ),
        (
            "  client_auth_type: RequestClientCert\n",
            "RequestClientCert: requesting a client certificate without verifying it is not "
            "supported",
        ),
        ("  client_auth_type: Sometimes\n", "client_auth_type: unknown value Sometimes"),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "RequireAndVerifyClientCert needs client_ca_file",
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n",
            "VerifyClientCertIfGiven needs client_ca_file",
        ),
        (
            "  client_ca_file: ca.pem\n",
            "client_ca_file is set but client_auth_type is NoClientCert",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: nope.pem\n",
            "client_ca_file: no such file",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: server.key\n",
            "client_ca_file: cannot load the CA certificates",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
            "  client_ca: x\n",
            "client_ca_file and client_ca are both set",
        ),
        (
            "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: ca.pem\n"
            "  client_allowed_sans: [a]\n",
            "client_allowed_sans needs client_auth_type RequireAndVerifyClientCert",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
            "  client_allowed_sans: []\n",
            "client_allowed_sans: empty",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n"
            "  client_allowed_sans: a.example\n",
            "client_allowed_sans: expected a list",
        ),
        # inline certificates and keys
        ("  cert: x\n", "tls_server_config.cert is not supported"),
        ("  key: x\n", "tls_server_config.key is not supported"),
        # not in the toolkit's format at all
        ("  bogus: 1\n", "tls_server_config.bogus: unknown key"),
    ],
)
def test_refusals(certs, tls, message):
    assert message in refused(certs, tls)


@pytest.mark.parametrize(
    ("top", "message"),
    [
        ("rate_limit:\n  interval: 1s\n  burst: 5\n", "rate_limit is not supported"),
        ("http_server_config:\n  http2: true\n", "http_server_config.http2: true is not supported"),
        ("http_server_config:\n  headers:\n    X-Foo: bar\n", "header X-Foo cannot be configured"),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "X-Frame-Options: expected deny or sameorigin",
        ),
        ("no_such_section: 1\n", "no_such_section: unknown key"),
    ],
)
def test_refusals_outside_tls(certs, top, message):
    assert message in refused(certs, top=top)


def test_what_is_accepted_outside_tls(certs):
    config = load(
        certs,
        top="http_server_config:\n  http2: false\n  headers:\n"
        "    X-Frame-Options: deny\n    Strict-Transport-Security: max-age=31536000\n",
    )
    assert config.headers == {
        "X-Frame-Options": "deny",
        "Strict-Transport-Security": "max-age=31536000",
    }


def test_the_exporters_server_serves_only_allowed_client_certificates(certs):
    """The exporter's own server (server.py, no probes) with a config asking
    for verified client certificates with an allowed SAN."""
    config = load(
        certs,
        MTLS.format("RequireAndVerifyClientCert") + "  client_allowed_sans: [scraper.example]\n",
    )
    server = Server(("127.0.0.1", 0), CollectorRegistry(auto_describe=False), config)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"https://127.0.0.1:{server.server_address[1]}/metrics"

    def get(client: str | None) -> int:
        ctx = client_context(certs, client)
        with urllib.request.urlopen(url, context=ctx, timeout=5) as response:
            return response.status

    try:
        assert get("good") == 200
        for client in ("other", "rogue", None):
            with pytest.raises((ssl.SSLError, OSError)):
                get(client)
    finally:
        server.shutdown()
        server.server_close()
