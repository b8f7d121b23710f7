"""Why did the handshake fail? One answer worth a second look: a server key too small for TLS 1.3.

A 512-bit RSA key cannot make any signature TLS 1.3 allows (RSA-PSS with SHA-256 needs more room), so
the server aborts or hangs up on a TLS 1.3 ClientHello, which reads like "no version or cipher in
common" or "not a TLS port". A handshake capped at TLS 1.2 at security level 0, verifying nothing,
still gets the certificate; when its key is weak, that is the diagnosis (and the chain is reported).
Only after a failed handshake, so a healthy broker never pays for it.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache

from exporter.certs.chain import weak_key
from exporter.certs.parse import parse_der
from exporter.probe.wire.connection import connect
from exporter.probe.wire.tls import (
    ClientCertificateRequired,
    TlsClosed,
    TlsHandshakeFailure,
    TlsProtocolError,
    TlsSession,
)
from exporter.results import CertFacts

#: At most this long for the second look (within the probe's deadline)
SMALL_KEY_TIMEOUT = 3.0


@lru_cache(maxsize=1)
def _tls12_any_key() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


async def small_key_chain(
    ip: str, port: int, server_name: str, timeout: float
) -> tuple[str, tuple[CertFacts, ...]]:
    """(TLS version, the chain) when the server's leaf has a key too small for OpenSSL's default level;
    ("", ()) otherwise, or when even this handshake fails."""
    try:
        async with asyncio.timeout(min(timeout, SMALL_KEY_TIMEOUT)):
            connection = await connect(ip, port)
            session = TlsSession(connection, _tls12_any_key(), server_name.strip("[]") or None)
            try:
                await session.handshake()
            finally:
                session.close()
    except (
        TimeoutError,
        OSError,
        TlsProtocolError,
        TlsHandshakeFailure,
        ClientCertificateRequired,
        TlsClosed,
    ):
        return "", ()  # this handshake fails too: nothing more to learn here
    chain = tuple(parse_der(der).facts for der in session.chain_der)
    if not chain or not weak_key(chain[0]):
        return "", ()
    return session.version, chain
