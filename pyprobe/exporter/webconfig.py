"""The web config file, in the Prometheus exporter-toolkit format:

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      min_version: TLS12        # TLS12 (default) or TLS13; older is refused
    basic_auth_users:
      alice: $2y$10$...         # bcrypt hashes (htpasswd -nBC 10 "" | tr -d ':')

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

TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
KNOWN = {
    "tls_server_config": {
        "cert_file",
        "key_file",
        "min_version",
        "max_version",
        "client_auth_type",
        "cipher_suites",
        "prefer_server_cipher_suites",
        "curve_preferences",
    },
    "basic_auth_users": None,
    "http_server_config": {"http2", "headers"},
}


class ConfigError(PyprobeError):
    pass


def _show(value: object) -> str:
    """A key from the file, as it can be printed on one line."""
    return value if isinstance(value, str) and value.isprintable() else repr(value)


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
        allowed = KNOWN[key]
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping")
        if allowed is not None:
            for sub in value or {}:
                if sub not in allowed:
                    raise ConfigError(f"{where}: {key}.{_show(sub)}: unknown key")
    config = WebConfig(source=str(path))
    tls = doc.get("tls_server_config")
    if tls:
        config.tls = _tls(tls, path.parent, where)
    for user, hashed in (doc.get("basic_auth_users") or {}).items():
        if not isinstance(hashed, str) or not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(
                f"{where}: basic_auth_users.{_show(user)}: expected a bcrypt hash ($2y$...)"
            )
        config.users[str(user)] = hashed.encode()
    headers = (doc.get("http_server_config") or {}).get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigError(f"{where}: http_server_config.headers: expected a mapping")
    config.headers = {str(k): str(v) for k, v in headers.items()}
    return config


def _tls(tls: dict[str, Any], base: Path, where: str) -> ssl.SSLContext:
    def file(key: str) -> str:
        value = tls.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: tls_server_config.{key}: required")
        p = Path(value) if Path(value).is_absolute() else base / value
        if not p.is_file():
            raise ConfigError(f"{where}: tls_server_config.{key}: no such file {_show(str(p))}")
        return str(p)

    def version(key: str, default: str) -> ssl.TLSVersion:
        value = tls.get(key, default)
        if value not in TLS_VERSIONS:
            raise ConfigError(
                f"{where}: tls_server_config.{key}: {value!r} not allowed "
                f"(use {' or '.join(TLS_VERSIONS)}; older TLS is refused)"
            )
        return TLS_VERSIONS[value]

    client_auth = tls.get("client_auth_type", "NoClientCert")
    if client_auth != "NoClientCert":
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type: only NoClientCert is supported"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = version("min_version", "TLS12")
    if "max_version" in tls:
        ctx.maximum_version = version("max_version", "TLS13")
    try:
        ctx.load_cert_chain(file("cert_file"), file("key_file"))
    except ssl.SSLError as e:
        raise ConfigError(f"{where}: tls_server_config: cannot load the certificate: {e}") from None
    return ctx


def _yaml_at(e: Exception) -> str:
    """Where in the file a YAML error is (" at line 2, column 4"), if known."""
    mark = getattr(e, "problem_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _yaml_problem(e: Exception) -> str:
    """What is wrong, in one line: the parser's problem ("mapping values are
    not allowed here"), not its context ("while parsing a flow node")."""
    problem = getattr(e, "problem", None)
    return str(problem) if problem else str(e).splitlines()[0]
