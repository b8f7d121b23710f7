"""Why did the handshake fail? Two answers worth a second look, taken only after a failed handshake (a
healthy broker never pays for them), with one handshake capped at TLS 1.2 at security level 0 that
verifies nothing:

* A key too small for TLS 1.3: a 512-bit RSA key cannot make any signature TLS 1.3 allows, so the server
  aborts or hangs up on a TLS 1.3 ClientHello, which reads like "no version or cipher in common" or "not
  a TLS port". Under TLS 1.2 the certificate still arrives; when its key is weak, that is the diagnosis.
* A certificate message over OpenSSL's 100 KiB limit ("excessive message size"): OpenSSL drops the bytes,
  but under TLS 1.2 they arrive in plaintext records, and ``wire.records`` reads the certificates from
  them, so the chain's facts (expiry first) are still reported.
"""

from __future__ import annotations

import asyncio
import ssl
from functools import lru_cache

from mqtt_cert_exporter.certs.chain import weak_key
from mqtt_cert_exporter.certs.parse import parse_der
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.probe.draft import Draft
from mqtt_cert_exporter.probe.wire.connection import connect
from mqtt_cert_exporter.probe.wire.records import certificates_in_flight
from mqtt_cert_exporter.probe.wire.tls import (
    MAX_HANDSHAKE_BYTES,
    READ_CHUNK,
    ClientCertificateRequired,
    TlsCertificateTooLarge,
    TlsClosed,
    TlsHandshakeFailure,
    TlsProtocolError,
    TlsSession,
)
from mqtt_cert_exporter.results import (
    CertFacts,
    Failure,
    Problem,
    Reason,
    Stage,
    TlsFacts,
    TrustVerdict,
)

#: At most this long for the second look (within the probe's deadline)
SECOND_LOOK_TIMEOUT = 3.0
_LOOKED_AT = (Reason.HANDSHAKE_FAILURE, Reason.PROTOCOL_ERROR, Reason.CERTIFICATE_TOO_LARGE)


@lru_cache(maxsize=1)
def _tls12_any_key() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


async def _tls12_chain(
    ip: str, port: int, server_name: str, timeout: float
) -> tuple[str, tuple[CertFacts, ...]]:
    """(TLS version, the chain as sent) from one TLS 1.2 handshake; ("", ()) when none came."""
    raw = bytearray()
    session: TlsSession | None = None
    try:
        async with asyncio.timeout(min(timeout, SECOND_LOOK_TIMEOUT)):
            connection = await connect(ip, port)
            session = TlsSession(connection, _tls12_any_key(), server_name.strip("[]") or None, keep_raw=True)
            try:
                await session.handshake()
            except TlsCertificateTooLarge:
                # OpenSSL stopped at the message's length; the rest of the flight is on its way
                raw = session.raw or bytearray()
                while not certificates_in_flight(bytes(raw)) and len(raw) < MAX_HANDSHAKE_BYTES:
                    data = await connection.read(READ_CHUNK)
                    if not data:
                        break
                    raw += data
            finally:
                session.close()
    except _FAILED:
        pass  # this handshake fails too: what arrived is all there is to learn
    if raw:
        return "", tuple(parse_der(der).facts for der in certificates_in_flight(bytes(raw)))
    if session is None or not session.handshake_done:
        return "", ()
    return session.version, tuple(parse_der(der).facts for der in session.chain_der)


_FAILED = (TimeoutError, OSError, TlsProtocolError, TlsHandshakeFailure, ClientCertificateRequired, TlsClosed)


async def second_look(broker: BrokerConfig, draft: Draft, remaining: float) -> None:
    """The draft of a probe whose handshake failed gains the cause and the chain when a second look
    finds them."""
    failure = draft.failure
    if failure is None or failure.stage is not Stage.TLS or failure.reason not in _LOOKED_AT:
        return
    if broker.proxy is not None or not draft.ip:  # a direct connection would bypass the proxy
        return
    version, chain = await _tls12_chain(draft.ip, broker.target.port, broker.server_name, remaining)
    if not chain:
        return
    if failure.reason is Reason.CERTIFICATE_TOO_LARGE:
        detail = "the chain was read from the raw handshake: OpenSSL clients refuse it before verifying it"
        verdict = TrustVerdict(trusted=False, problems=(Problem.INVALID,), details=(detail,))
        draft.tls = TlsFacts(version="", cipher="", chain=chain, verdict=verdict)
        return
    if not weak_key(chain[0]):
        return
    detail = (
        f"the server's certificate has a {chain[0].key} key, too small for TLS 1.3 (no signature algorithm "
        "fits) and for OpenSSL clients at their default security level"
    )
    verdict = TrustVerdict(trusted=False, problems=(Problem.WEAK_KEY,), details=(detail,))
    draft.tls = TlsFacts(version=version, cipher="", chain=chain, verdict=verdict)
    draft.failure = Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, detail)
