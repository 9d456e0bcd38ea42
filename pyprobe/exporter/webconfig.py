"""The web config file, in the Prometheus exporter-toolkit format
(https://github.com/prometheus/exporter-toolkit/blob/master/docs/web-configuration.md):

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      min_version: TLS12        # TLS12 (default) or TLS13; older is refused
      client_auth_type: RequireAndVerifyClientCert
      client_ca_file: ca.crt
    http_server_config:
      headers:
        Strict-Transport-Security: max-age=31536000
    basic_auth_users:
      alice: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':')

Every key is honoured exactly or refused (tlsconfig.py says what each TLS
key becomes): a key of the toolkit's format that pyprobe does not implement
is "not supported", a key the format does not have is an "unknown key".
Validated as a whole before it is used; any problem is one ConfigError line
naming the file and the key. Relative paths are relative to the file.
"""

from __future__ import annotations

import hashlib
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from ..errors import PyprobeError
from . import tlsconfig
from .tlsconfig import show as _show

# Every key of the toolkit's format (None: a mapping of the user's names).
KNOWN: dict[str, set[str] | None] = {
    "tls_server_config": {
        "cert_file",
        "key_file",
        "cert",
        "key",
        "min_version",
        "max_version",
        "client_auth_type",
        "client_ca_file",
        "client_ca",
        "client_allowed_sans",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    },
    "basic_auth_users": None,
    "http_server_config": {"http2", "headers"},
    "rate_limit": {"interval", "burst"},
}
# Keys of the format pyprobe does not implement, and what to do instead.
UNSUPPORTED = {
    "rate_limit": "the exporter serves at most 32 connections at once and answers 503 beyond",
    "tls_server_config.cert": "give the certificate as cert_file",
    "tls_server_config.key": "give the key as key_file",
}
# The toolkit's own list: the headers it lets a config set, and the values
# allowed where it restricts them.
HEADERS: dict[str, tuple[str, ...]] = {
    "Strict-Transport-Security": (),
    "X-Content-Type-Options": ("nosniff",),
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-XSS-Protection": (),
    "Content-Security-Policy": (),
}


class ConfigError(PyprobeError):
    pass


@dataclass
class WebConfig:
    source: str = ""
    tls: ssl.SSLContext | None = None
    users: dict[str, bytes] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    _verified: set[bytes] = field(default_factory=set, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def authorized(self, user: str, password: str) -> bool:
        """bcrypt is slow on purpose; a success is remembered (as a hash of the
        credentials), like exporter-toolkit does, so scrapes stay fast."""
        hashed = self.users.get(user)
        if hashed is None:
            return False
        key = hashlib.sha256(f"{user}\0{password}".encode() + hashed).digest()
        with self._lock:
            if key in self._verified:
                return True
        try:
            ok = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:
            return False
        if ok:
            with self._lock:
                self._verified.add(key)
        return ok


def load(path: str | Path | None) -> WebConfig:
    if path is None:
        return WebConfig()
    path = Path(path)
    where = str(path)  # as the user gave it: a bare name is ambiguous among several configs
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ConfigError(f"{where}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{where}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: not valid YAML{_yaml_at(e)}: {_yaml_problem(e)}") from None
    if doc is None:
        return WebConfig(source=str(path))
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for key, value in doc.items():
        if key not in KNOWN:
            raise ConfigError(f"{where}: {_show(key)}: unknown key (known: {', '.join(KNOWN)})")
        if value is None:
            continue  # a section left empty is a section left out
        if key in UNSUPPORTED:
            raise ConfigError(f"{where}: {key} is not supported: {UNSUPPORTED[key]}")
        allowed = KNOWN[key]
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping")
        if allowed is None:
            continue  # basic_auth_users: the names are the user's
        for sub in value:
            if sub not in allowed:
                raise ConfigError(f"{where}: {key}.{_show(sub)}: unknown key")
            if f"{key}.{sub}" in UNSUPPORTED:
                why = UNSUPPORTED[f"{key}.{sub}"]
                raise ConfigError(f"{where}: {key}.{sub} is not supported: {why}")
    config = WebConfig(source=str(path))
    tls = doc.get("tls_server_config")
    if tls:
        try:
            config.tls = tlsconfig.build(tls, path.parent)
        except tlsconfig.Refused as e:
            raise ConfigError(f"{where}: {e}") from None
    for user, hashed in (doc.get("basic_auth_users") or {}).items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(
                f"{where}: basic_auth_users.{_show(user)}: expected a bcrypt hash ($2y$...)"
            )
        config.users[str(user)] = hashed.encode()
    config.headers = _http(doc.get("http_server_config") or {}, where)
    return config


def _http(http: dict[str, Any], where: str) -> dict[str, str]:
    """http_server_config: the headers to send (as the toolkit checks them);
    HTTP/2 is refused, the server speaks HTTP/1.1."""
    http2 = http.get("http2")
    if http2 is not None and not isinstance(http2, bool):
        raise ConfigError(f"{where}: http_server_config.http2: expected true or false")
    if http2:
        raise ConfigError(
            f"{where}: http_server_config.http2: true is not supported (the exporter "
            "serves HTTP/1.1; set false or leave it out)"
        )
    headers = http.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}: http_server_config.headers: expected a mapping")
    out = {}
    for name, value in headers.items():
        if name not in HEADERS:
            raise ConfigError(
                f"{where}: http_server_config.headers: header {_show(name)} cannot be "
                f"configured (only {', '.join(HEADERS)})"
            )
        text = "" if value is None else str(value)
        if HEADERS[name] and text not in HEADERS[name]:
            raise ConfigError(
                f"{where}: http_server_config.headers.{name}: expected "
                f"{' or '.join(HEADERS[name])}, not {_show(text)}"
            )
        if not text.isprintable():  # a line break would end the header early
            raise ConfigError(f"{where}: http_server_config.headers.{name}: not one line")
        if text:  # blank: unset, as the toolkit documents
            out[name] = text
    return out


def _yaml_at(e: Exception) -> str:
    """Where in the file a YAML error is (" at line 2, column 4"), if known."""
    mark = getattr(e, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(e: Exception) -> str:
    """What is wrong, in one line: the parser's problem ("mapping values are
    not allowed here"), not its context ("while parsing a flow node")."""
    problem = getattr(e, "problem", None)
    return str(problem) if problem else str(e).splitlines()[0]
