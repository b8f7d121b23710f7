"""`--web.config.file`: TLS and basic auth for the exporter's own endpoint, in the Prometheus
exporter-toolkit format (the one node_exporter and blackbox_exporter read):

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_auth_type: RequireAndVerifyClientCert   # NoClientCert (default), VerifyClientCertIfGiven
      client_ca_file: clients.crt
      min_version: TLS12                             # TLS12 or TLS13
      max_version: TLS13
    basic_auth_users:
      prometheus: $2y$10$...                          # bcrypt hash (htpasswd -nBC 10 "" | tr -d ':\\n')

Everything is validated at start (every hash too: a malformed one used to answer 500 on every request);
errors name their path. How the users are checked: exporter.web.basicauth.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from aiohttp import web
from aiohttp.typedefs import Middleware

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.config import ConfigError
from mqtt_cert_exporter.web.basicauth import BasicAuth, hash_problem

log = logs.get_logger("mqtt_cert_exporter.web")

_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
_UNSUPPORTED_CLIENT_AUTH = {"RequestClientCert", "RequireAnyClientCert"}
_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = {
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "cipher_suites",
    "prefer_server_cipher_suites",
    "curve_preferences",
}
_TOP_KEYS = {"tls_server_config", "basic_auth_users", "http_server_config"}


@dataclass
class WebConfig:
    ssl_context: ssl.SSLContext | None = None
    auth: BasicAuth = field(default_factory=lambda: BasicAuth({}))

    def middleware(self) -> Middleware:
        @web.middleware
        async def authenticate(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            allowed = _loopback_health_check(request) or await self.auth.allows(
                request.headers.get("Authorization")
            )
            if allowed:
                return await handler(request)
            if allowed is None:
                return web.Response(
                    status=429, text="Too many password checks at once\n", headers={"Retry-After": "1"}
                )
            return web.Response(
                status=401,
                text="Unauthorized\n",
                headers={"WWW-Authenticate": 'Basic realm="mqtt-cert-exporter"'},
            )

        return authenticate


#: Answered without basic auth to loopback peers: `mqtt-cert-exporter healthcheck` (Docker HEALTHCHECK,
#: Kubernetes exec probes) runs next to the exporter and cannot know a password, only its hash.
HEALTH_PATHS = frozenset({"/-/healthy", "/-/ready"})


def is_loopback(remote: str | None) -> bool:
    """Pure: whether a peer address (``request.remote``) is loopback, IPv4-mapped IPv6 included."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def _loopback_health_check(request: web.Request) -> bool:
    return request.method in ("GET", "HEAD") and request.path in HEALTH_PATHS and is_loopback(request.remote)


def load_web_config(path: str) -> WebConfig:
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_web_config(document or {}, base_dir=os.path.dirname(os.path.abspath(path)))


def parse_web_config(document: Any, *, base_dir: str) -> WebConfig:  # noqa: C901 - one check per key of the exporter-toolkit document, all errors at once
    errors: list[str] = []
    if not isinstance(document, dict):
        raise ConfigError(["web config: expected a mapping"])
    for key in document:
        if key not in _TOP_KEYS:
            errors.append(f"{key}: unknown key")
    config = WebConfig()
    users = document.get("basic_auth_users") or {}
    if not isinstance(users, dict):
        errors.append("basic_auth_users: expected a mapping of user name to bcrypt hash")
        users = {}
    parsed_users: dict[str, bytes] = {}
    for user, hashed in users.items():
        problem = hash_problem(hashed)
        if problem is not None:
            errors.append(f"basic_auth_users.{user}: {problem}")
            continue
        parsed_users[str(user)] = hashed.encode()
    tls = document.get("tls_server_config")
    if tls is not None:
        if not isinstance(tls, dict):
            errors.append("tls_server_config: expected a mapping")
        else:
            config.ssl_context = _ssl_context(tls, base_dir, errors)
    if errors:
        raise ConfigError(errors)
    config.auth = BasicAuth(parsed_users)
    if config.auth.mixed_costs:
        log.warning(
            "basic_auth_users hashes have different bcrypt costs: response times tell which user names "
            "exist; hash every password with the same cost"
        )
    return config


def _path(tls: Mapping[str, Any], key: str, base_dir: str, errors: list[str]) -> str | None:
    value = tls.get(key)
    if value is None:
        return None
    path = os.path.join(base_dir, str(value))
    if not os.path.isfile(path):
        errors.append(f"tls_server_config.{key}: {path}: no such file")
        return None
    return path


def _ssl_context(tls: Mapping[str, Any], base_dir: str, errors: list[str]) -> ssl.SSLContext | None:  # noqa: C901, PLR0912 - debt: one branch per tls_server_config key; a key table would do
    before = len(errors)
    for name in tls:
        if name not in _TLS_KEYS:
            errors.append(f"tls_server_config.{name}: unknown key")
    cert = _path(tls, "cert_file", base_dir, errors)
    key = _path(tls, "key_file", base_dir, errors)
    if "cert_file" not in tls or "key_file" not in tls:
        errors.append("tls_server_config: cert_file and key_file are both required")
    auth_type = str(tls.get("client_auth_type", "NoClientCert"))
    if auth_type in _UNSUPPORTED_CLIENT_AUTH:
        errors.append(
            f"tls_server_config.client_auth_type: {auth_type} is not supported; use "
            "VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )
    elif auth_type not in _CLIENT_AUTH:
        errors.append(f"tls_server_config.client_auth_type: unknown value {auth_type!r}")
    client_ca = _path(tls, "client_ca_file", base_dir, errors)
    if _CLIENT_AUTH.get(auth_type, ssl.CERT_NONE) != ssl.CERT_NONE and "client_ca_file" not in tls:
        errors.append(f"tls_server_config.client_ca_file: required with client_auth_type {auth_type}")
    versions = {}
    for bound in ("min_version", "max_version"):
        if bound in tls:
            if tls[bound] not in _VERSIONS:
                errors.append(f"tls_server_config.{bound}: expected TLS12 or TLS13, got {tls[bound]!r}")
            else:
                versions[bound] = _VERSIONS[tls[bound]]
    if len(errors) > before or cert is None or key is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = versions.get("min_version", ssl.TLSVersion.TLSv1_2)
    if "max_version" in versions:
        context.maximum_version = versions["max_version"]
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        errors.append(f"tls_server_config: cannot load cert_file/key_file: {exc}")
        return None
    context.verify_mode = _CLIENT_AUTH[auth_type]
    if client_ca is not None:
        try:
            context.load_verify_locations(cafile=client_ca)
        except (ssl.SSLError, OSError) as exc:
            errors.append(f"tls_server_config.client_ca_file: cannot load: {exc}")
            return None
    return context
