"""`mqtt-cert-exporter healthcheck`: is the exporter in this container (or on this host) healthy?

Made for Docker's HEALTHCHECK and Kubernetes exec probes, which cannot know the exporter's
credentials: it asks ``/-/healthy`` (or ``--path=/-/ready``) over loopback, which the exporter
answers without basic auth to loopback peers only (exporter.web.webconfig); an exporter bound to one
non-loopback address is asked there and still wants the password. It speaks TLS when the exporter
does (found out by trying, without verifying the certificate: the peer is this machine itself) and
falls back to plain HTTP. When the exporter requires client certificates
(``client_auth_type: RequireAndVerifyClientCert``), give it one: ``--tls.cert-file``/``--tls.key-file``.

Exit status 0 healthy, 1 not (the reason on stderr). Standard library only: it starts in a few tens of
milliseconds, cheap enough for a probe every few seconds.
"""

from __future__ import annotations

import argparse
import http.client
import ssl
import sys
from collections.abc import Sequence

PATHS = ("/-/healthy", "/-/ready")


def loopback_target(listen_address: str) -> tuple[str, int]:
    """Pure: where to reach a server that listens on ``listen_address`` (``:9883``, ``[::]:9883``,
    ``127.0.0.1:9883``) from this machine."""
    host, sep, port = listen_address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ValueError(f"--web.listen-address {listen_address!r}: expected [host]:port, e.g. :9883")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "localhost"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return host, int(port)


def _tls_context(certificate: tuple[str, str] | None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if certificate is not None:
        context.load_cert_chain(*certificate)
    return context


def _get(connection: http.client.HTTPConnection, path: str) -> tuple[int, str]:
    try:
        connection.request("GET", path, headers={"User-Agent": "mqtt-cert-exporter-healthcheck"})
        response = connection.getresponse()
        return response.status, response.read(200).decode(errors="replace").strip()
    finally:
        connection.close()


def ask(
    host: str, port: int, path: str, timeout: float, certificate: tuple[str, str] | None
) -> tuple[int, str]:
    """HTTP status and body of ``path``: over TLS if the server speaks it, else plain HTTP."""
    context = _tls_context(certificate)
    try:
        return _get(http.client.HTTPSConnection(host, port, timeout=timeout, context=context), path)
    except ssl.SSLError as exc:
        if "WRONG_VERSION_NUMBER" not in str(exc).upper():
            raise
    except ConnectionResetError:  # a plain-HTTP server that closed on the ClientHello
        pass
    return _get(http.client.HTTPConnection(host, port, timeout=timeout), path)


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="mqtt-cert-exporter healthcheck",
        description="exit 0 if the exporter on this machine answers /-/healthy (for HEALTHCHECK and "
        "Kubernetes exec probes); works with --web.config.file basic auth and TLS",
    )
    parser.add_argument("--path", choices=PATHS, default=PATHS[0], help="/-/ready for readiness probes")
    parser.add_argument("--web.listen-address", dest="listen_address", default=":9883")
    parser.add_argument(
        "--tls.cert-file",
        dest="cert_file",
        default=None,
        help="client certificate to present, when the exporter requires one (with --tls.key-file)",
    )
    parser.add_argument("--tls.key-file", dest="key_file", default=None)
    parser.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    args = parser.parse_args(argv)
    try:
        host, port = loopback_target(args.listen_address)
        certificate = (args.cert_file, args.key_file or args.cert_file) if args.cert_file else None
        status, body = ask(host, port, args.path, args.timeout, certificate)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        print(f"unhealthy: {args.listen_address}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {args.path} answered HTTP {status}: {body}", file=sys.stderr)
        return 1
    print(body)
    return 0


def run() -> int:
    """The ``mqtt-cert-exporter-healthcheck`` command: this module alone, without the exporter's
    imports (aiohttp, cryptography), so a probe costs ~0.1 s of CPU instead of ~0.5 s."""
    return main(sys.argv[1:])
