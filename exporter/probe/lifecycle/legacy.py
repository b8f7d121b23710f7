"""Does the broker still accept TLS 1.0/1.1? One extra handshake capped at TLS 1.1, run at a slower
cadence than the probe (see ``Prober``), never part of ``probe_success``.

Debian's OpenSSL refuses TLS < 1.2 at its default security level (the handshake cannot even be
offered), so this context sets ``@SECLEVEL=0`` and a minimum of TLS 1.0. It verifies nothing: it only
asks which version the server agrees to.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import warnings
from functools import lru_cache

from mqtt_cert_exporter.probe.wire.connection import connect
from mqtt_cert_exporter.probe.wire.tls import (
    ClientCertificateRequired,
    TlsHandshakeFailure,
    TlsProtocolError,
    TlsSession,
    note_certificate_request,
)
from mqtt_cert_exporter.results import LegacyTlsFacts

LEGACY_VERSIONS = frozenset({"TLSv1", "TLSv1.1"})


@lru_cache(maxsize=256)
def legacy_context(cert_file: str | None, key_file: str | None) -> ssl.SSLContext:
    """A client context that offers TLS 1.0 and 1.1 only (with our client certificate when configured,
    so a broker that requires one does not look like one that refuses the version)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "ssl.TLSVersion.TLSv1 is deprecated": we know
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    context._msg_callback = note_certificate_request  # type: ignore[attr-defined]  # noqa: SLF001 - ssl has no public hook for the handshake messages
    return context


async def check_legacy_tls(
    ip: str,
    port: int,
    server_name: str,
    *,
    timeout: float,
    cert_file: str | None = None,
    key_file: str | None = None,
) -> LegacyTlsFacts:
    """One handshake capped at TLS 1.1 against ``ip:port``."""
    now = time.time()
    try:
        async with asyncio.timeout(timeout):
            connection = await connect(ip, port)
    except (TimeoutError, OSError) as exc:
        return LegacyTlsFacts(None, checked_at=now, detail=f"cannot connect: {exc or 'timeout'}")
    session = TlsSession(
        connection,
        legacy_context(cert_file, key_file),
        server_name.strip("[]") or None,
        sends_client_certificate=bool(cert_file),
    )
    try:
        async with asyncio.timeout(timeout):
            await session.handshake()
    except TimeoutError:
        return LegacyTlsFacts(None, checked_at=now, detail="the TLS 1.1 handshake timed out")
    except ClientCertificateRequired as exc:
        if session.certificate_requested:
            # The server asked for a certificate after agreeing on the version: it accepts TLS <= 1.1.
            return LegacyTlsFacts(True, checked_at=now, detail=f"accepted the version, then: {exc}")
        return LegacyTlsFacts(None, checked_at=now, detail=str(exc))
    except (TlsHandshakeFailure, TlsProtocolError, ssl.SSLError) as exc:
        return LegacyTlsFacts(False, checked_at=now, detail=f"refused: {exc}")
    except OSError as exc:
        return LegacyTlsFacts(None, checked_at=now, detail=f"connection failed: {exc}")
    finally:
        session.close()
    version = session.version
    if version not in LEGACY_VERSIONS:  # cannot happen with this context; never claim what we did not see
        return LegacyTlsFacts(False, version=version, checked_at=now, detail=f"negotiated {version}")
    return LegacyTlsFacts(True, version=version, checked_at=now, detail=f"accepted {version}")
