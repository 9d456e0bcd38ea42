"""The web config's tls_server_config as an ssl.SSLContext: every key of the
exporter-toolkit format is applied exactly as the toolkit (Go's crypto/tls)
would, or refused with one line saying why; none is accepted and ignored.

    cert_file, key_file          load_cert_chain (cert and key inline: refused)
    min_version, max_version     minimum_version / maximum_version: TLS12 (the
                                 default minimum) or TLS13 (the default maximum);
                                 TLS10 and TLS11 are refused
    cipher_suites                Go's names (TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)
                                 mapped to OpenSSL's, set with set_ciphers in the
                                 order given. As in Go they govern TLS 1.2 only:
                                 TLS 1.3 negotiates its own three suites, which
                                 neither Go nor Python's ssl lets be chosen. Absent:
                                 Go's defaults (ECDHE only), not OpenSSL's (which
                                 also allow RSA key exchange and DHE).
    prefer_server_cipher_suites  OP_CIPHER_SERVER_PREFERENCE (default true, as the
                                 toolkit's): the server's order wins, else the client's
    curve_preferences            one curve: set_ecdh_curve, the only group offered in
                                 TLS 1.2 and 1.3; absent: OpenSSL's defaults
    client_auth_type             NoClientCert: CERT_NONE; VerifyClientCertIfGiven:
                                 CERT_OPTIONAL; RequireAndVerifyClientCert:
                                 CERT_REQUIRED
    client_ca_file, client_ca    load_verify_locations (file, or PEM text)
    client_allowed_sans          checked once each handshake is done, by the
                                 context's own socket and object classes

Refused, because Python's ssl cannot do them exactly: an ordered list of
curves (set_ecdh_curve takes one), a client certificate requested or
required but not verified (RequestClientCert, RequireAnyClientCert: a
verifying context checks every certificate it gets). Go verifies client
certificates against the system's roots when no CA is given; here the CA is
required instead (the public CAs are no one's client authority)."""

from __future__ import annotations

import contextlib
import ipaddress
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go's crypto/tls.CipherSuites() for TLS 1.0-1.2 (its secure ones), in Go's
# default order of preference, and their OpenSSL names.
SUITES = {
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
}
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Go's InsecureCipherSuites(), with the reason Go gives.
_RC4, _3DES = "RC4 is broken", "3DES has 64-bit blocks (Sweet32)"
_NO_PFS, _LUCKY13 = "RSA key exchange: no forward secrecy", "CBC-SHA256: no Lucky13 countermeasures"
INSECURE = {
    "TLS_RSA_WITH_RC4_128_SHA": _RC4,
    "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA": _RC4,
    "TLS_ECDHE_RSA_WITH_RC4_128_SHA": _RC4,
    "TLS_RSA_WITH_3DES_EDE_CBC_SHA": _3DES,
    "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA": _3DES,
    "TLS_RSA_WITH_AES_128_CBC_SHA": _NO_PFS,
    "TLS_RSA_WITH_AES_256_CBC_SHA": _NO_PFS,
    "TLS_RSA_WITH_AES_128_GCM_SHA256": _NO_PFS,
    "TLS_RSA_WITH_AES_256_GCM_SHA384": _NO_PFS,
    "TLS_RSA_WITH_AES_128_CBC_SHA256": _LUCKY13,
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256": _LUCKY13,
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256": _LUCKY13,
}
# Go's CurveID names (the toolkit's curve_preferences) and OpenSSL's.
CURVES = {"CurveP256": "prime256v1", "CurveP384": "secp384r1", "CurveP521": "secp521r1"}
CURVES["X25519"] = "X25519"
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED = {
    "RequestClientCert": "requesting a client certificate without verifying it",
    "RequireAnyClientCert": "requiring a client certificate without verifying it",
    "RequireClientCert": "requiring a client certificate without verifying it",  # Go's old name
}


class Refused(Exception):
    """A setting that cannot be applied exactly; the message names the key."""


def _peer_sans(cert: dict) -> list[str]:
    """The certificate's SANs as Go's VerifyPeerCertificate in the toolkit
    compares them: DNS names, e-mail addresses, IP addresses as net.IP
    prints them, URIs."""
    out = []
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "IP Address":
            try:
                ip = ipaddress.ip_address(value.strip())  # _ssl prints IPv6 uncompressed
            except ValueError:
                continue  # "<invalid>": matches nothing
            mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
            out.append(str(mapped or ip))
        elif kind in ("DNS", "email", "URI"):
            out.append(value)
    return out


def check_peer(context: ssl.SSLContext, cert: dict | None) -> None:
    """After a handshake: raise SSLCertVerificationError unless the client's
    certificate has one of client_allowed_sans (exact match), if any are set."""
    allowed = getattr(context, "allowed_sans", None)
    if not allowed:
        return
    found = _peer_sans(cert or {})
    if not allowed.intersection(found):
        raise ssl.SSLCertVerificationError(
            f"client certificate has none of the allowed SANs (it has: {', '.join(found) or '-'})"
        )


class _CheckedSocket(ssl.SSLSocket):
    """Checks the client's SANs when the handshake is done. A server that
    never calls do_handshake() (do_handshake_on_connect=False, then a read)
    would let OpenSSL shake hands inside the read: so the first read or
    write makes sure the check ran."""

    _peer_checked = False

    def do_handshake(self, block: bool = False) -> None:
        super().do_handshake(block)
        # On failure wrap_socket() closes the connection and raises: the
        # server's handshake error path, as for a certificate OpenSSL refused.
        check_peer(self.context, self.getpeercert())
        self._peer_checked = True

    def _checked(self) -> None:
        # (no TLS object: unwrapped or closed, and super() says so)
        if not self._peer_checked and getattr(self, "_sslobj", None) is not None:
            self.do_handshake()  # returns at once if OpenSSL has shaken hands already

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        self._checked()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        self._checked()
        return super().write(data)

    def send(self, data: Any, flags: int = 0) -> int:
        self._checked()
        return super().send(data, flags)


class _CheckedObject(ssl.SSLObject):
    """The same for memory BIOs (asyncio, or a server's own event loop)."""

    _peer_checked = False

    def do_handshake(self) -> None:
        super().do_handshake()
        check_peer(self.context, self.getpeercert())
        self._peer_checked = True

    def read(self, len: int = 1024, buffer: Any = None) -> Any:
        if not self._peer_checked:
            self.do_handshake()
        return super().read(len, buffer)

    def write(self, data: Any) -> int:
        if not self._peer_checked:
            self.do_handshake()
        return super().write(data)


class ServerContext(ssl.SSLContext):
    """The server's context. Its sockets (wrap_socket) and objects (wrap_bio,
    asyncio) check client_allowed_sans once the handshake is done, so the
    server needs no code of its own for it."""

    sslsocket_class = _CheckedSocket
    sslobject_class = _CheckedObject
    allowed_sans: frozenset[str] | None = None


def build(tls: dict[str, Any], base: Path) -> ServerContext:
    """tls: the tls_server_config mapping (keys already known to be the
    toolkit's); relative paths are relative to base. Raises Refused."""
    get = tls.get  # a key given as null is a key left out, as in Go's YAML

    def path(key: str, required: bool = True) -> str | None:
        value = get(key)
        if value is None and not required:
            return None
        if value is None or value == "":
            raise Refused(f"tls_server_config.{key}: required")
        if not isinstance(value, str):
            raise Refused(f"tls_server_config.{key}: expected a file name")
        p = Path(value) if Path(value).is_absolute() else base / value
        if not p.is_file():
            raise Refused(f"tls_server_config.{key}: no such file {show(str(p))}")
        return str(p)

    ctx = ServerContext(ssl.PROTOCOL_TLS_SERVER)
    low, high = _version(get, "min_version", "TLS12"), _version(get, "max_version", "TLS13")
    if VERSIONS[low] > VERSIONS[high]:
        raise Refused(f"tls_server_config: min_version {low} is above max_version {high}")
    ctx.minimum_version, ctx.maximum_version = VERSIONS[low], VERSIONS[high]
    _ciphers(ctx, get("cipher_suites"), low)
    prefer = get("prefer_server_cipher_suites")
    prefer = True if prefer is None else prefer  # the toolkit's default
    if not isinstance(prefer, bool):
        raise Refused("tls_server_config.prefer_server_cipher_suites: expected true or false")
    if prefer:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    else:
        ctx.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    _curves(ctx, get("curve_preferences"))
    _client_auth(ctx, get, path)
    try:
        ctx.load_cert_chain(path("cert_file") or "", path("key_file"))
    except ssl.SSLError as e:
        raise Refused(f"tls_server_config: cannot load the certificate: {e}") from None
    return ctx


def _version(get: Callable[[str], Any], key: str, default: str) -> str:
    value = get(key)
    value = default if value is None else value
    if not isinstance(value, str) or value not in VERSIONS:
        raise Refused(
            f"tls_server_config.{key}: {value!r} not allowed "
            f"(use {' or '.join(VERSIONS)}; older TLS is refused)"
        )
    return str(value)


def _names(value: object, key: str) -> list[str]:
    """A list of names (Go's []string); null or [] is an empty list."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Refused(f"tls_server_config.{key}: expected a list of names")
    return list(dict.fromkeys(value))  # a repeat changes nothing in Go either


def _ciphers(ctx: ssl.SSLContext, value: object, low: str) -> None:
    names = _names(value, "cipher_suites")
    for name in names:
        if name in TLS13_SUITES:
            raise Refused(
                f"tls_server_config.cipher_suites: {name} is a TLS 1.3 suite; TLS 1.3 "
                "suites are not configurable (in Go neither): list TLS 1.2 suites only"
            )
        if name in INSECURE:
            raise Refused(
                f"tls_server_config.cipher_suites: {name} is insecure ({INSECURE[name]}; "
                "Go lists it in InsecureCipherSuites) and not supported"
            )
        if name not in SUITES:
            raise Refused(
                f"tls_server_config.cipher_suites: unknown cipher suite {show(name)} "
                f"(Go's names: {', '.join(SUITES)})"
            )
    if names and low == "TLS13":
        raise Refused(
            "tls_server_config: cipher_suites apply to TLS 1.2 only, and min_version is TLS13"
        )
    wanted = [SUITES[n] for n in names or SUITES]
    with contextlib.suppress(ssl.SSLError):  # none available: said below, naming them
        ctx.set_ciphers(":".join(wanted))
    have = [c["name"] for c in ctx.get_ciphers() if c["protocol"] != "TLSv1.3"]
    if have != wanted:
        # OpenSSL builds without some (FIPS: no ChaCha20); refuse, not serve fewer.
        missing = [n for n in names or SUITES if SUITES[n] not in have]
        raise Refused(
            f"tls_server_config.cipher_suites: not available in this OpenSSL "
            f"({ssl.OPENSSL_VERSION}): {', '.join(missing)}"
        )


def _curves(ctx: ssl.SSLContext, value: object) -> None:
    names = _names(value, "curve_preferences")
    for name in names:
        if name not in CURVES:
            raise Refused(
                f"tls_server_config.curve_preferences: unknown curve {show(name)} "
                f"(Go's names: {', '.join(CURVES)})"
            )
    if len(names) > 1:
        raise Refused(
            "tls_server_config.curve_preferences: Python's ssl module cannot apply an ordered "
            "list of curves (only one, with set_ecdh_curve): give one curve, or none for "
            "OpenSSL's default order"
        )
    if names:
        try:
            ctx.set_ecdh_curve(CURVES[names[0]])
        except (ssl.SSLError, ValueError):
            # Python 3.11's set_ecdh_curve takes NIST curves only.
            raise Refused(
                f"tls_server_config.curve_preferences: {names[0]} alone cannot be set by this "
                "Python's ssl module; leave curve_preferences out (OpenSSL prefers X25519)"
            ) from None


def _client_auth(
    ctx: ServerContext, get: Callable[[str], Any], path: Callable[[str, bool], str | None]
) -> None:
    kind = get("client_auth_type") or "NoClientCert"  # "" too, as in the toolkit
    if not isinstance(kind, str):
        raise Refused("tls_server_config.client_auth_type: expected a name (NoClientCert...)")
    if kind in UNVERIFIED:
        raise Refused(
            f"tls_server_config.client_auth_type: {kind}: {UNVERIFIED[kind]} is not supported "
            "(use RequireAndVerifyClientCert or VerifyClientCertIfGiven, with client_ca_file)"
        )
    if kind not in CLIENT_AUTH:
        raise Refused(
            f"tls_server_config.client_auth_type: unknown value {show(kind)} "
            f"(one of: {', '.join([*CLIENT_AUTH, *UNVERIFIED])})"
        )
    ca_file, ca_text = path("client_ca_file", False), get("client_ca")
    if ca_file is not None and ca_text is not None:
        raise Refused("tls_server_config: client_ca_file and client_ca are both set: keep one")
    if ca_text is not None and (not isinstance(ca_text, str) or not ca_text.strip()):
        raise Refused("tls_server_config.client_ca: expected PEM certificates")
    given = "client_ca_file" if ca_file is not None else "client_ca"
    if kind == "NoClientCert":
        if ca_file is not None or ca_text is not None:
            # as the toolkit: "client CA's have been configured without a Client Auth Policy"
            raise Refused(
                f"tls_server_config: {given} is set but client_auth_type is NoClientCert "
                "(set RequireAndVerifyClientCert or VerifyClientCertIfGiven)"
            )
    elif ca_file is None and ca_text is None:
        raise Refused(
            f"tls_server_config.client_auth_type: {kind} needs client_ca_file (the CA that "
            "signs the clients' certificates)"
        )
    else:
        try:
            ctx.load_verify_locations(cafile=ca_file, cadata=ca_text)
        except (ssl.SSLError, ValueError) as e:
            raise Refused(
                f"tls_server_config.{given}: cannot load the CA certificates: {e}"
            ) from None
    ctx.verify_mode = CLIENT_AUTH[kind]
    sans = get("client_allowed_sans")
    if sans is None:
        return
    if not isinstance(sans, list) or not all(isinstance(s, str) for s in sans):
        raise Refused("tls_server_config.client_allowed_sans: expected a list of names")
    if not sans:
        raise Refused("tls_server_config.client_allowed_sans: empty: it would refuse every client")
    if kind != "RequireAndVerifyClientCert":
        # A client without a certificate would have no SAN to match.
        raise Refused(
            "tls_server_config: client_allowed_sans needs client_auth_type "
            f"RequireAndVerifyClientCert, not {kind}"
        )
    ctx.allowed_sans = frozenset(sans)


def show(value: object) -> str:
    """A value from the file, as it can be printed on one line."""
    return value if isinstance(value, str) and value.isprintable() else repr(value)
