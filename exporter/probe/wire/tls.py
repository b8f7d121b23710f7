"""TLS as a client sees it: one handshake that yields OpenSSL's verdict *and* the presented chain.

``asyncio.open_connection(ssl=...)`` loses the peer chain when verification fails, which is the moment
our users need it most. So we drive an ``ssl.SSLObject`` over memory BIOs on top of a plain asyncio TCP
stream: when OpenSSL rejects the chain, the SSLObject still holds every certificate the server sent.
This is also cheaper in CPU than asyncio's SSL transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from mqtt_cert_exporter.config import TlsSettings, file_stamp
from mqtt_cert_exporter.probe.wire.connection import Connection

#: Never buffer more than this from a peer during the handshake (a hostile "chain" of megabytes).
MAX_HANDSHAKE_BYTES = 1 << 20
READ_CHUNK = 65536

#: TlsSettings fields used per connection or by other checks, never by the context.
_NOT_SHAPING_A_CONTEXT: dict[str, Any] = dict.fromkeys(
    ("server_name", "intermediates_file", "served_cert_file")
)
_TLS_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}

# OpenSSL alerts that a server sends when it rejects (or did not get) our client certificate.
_CLIENT_CERT_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "SSLV3_ALERT_CERTIFICATE_EXPIRED",
        "SSLV3_ALERT_CERTIFICATE_REVOKED",
        "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
    }
)
_CERTIFICATE_REQUEST = 13  # TLS handshake message types
_NEW_SESSION_TICKET = 4
_HANDSHAKE = 22  # TLS record content type


class TlsProtocolError(Exception):
    """The peer does not speak TLS (plaintext listener, garbage)."""


class TlsCertificateTooLarge(TlsProtocolError):
    """The server's certificate message is over OpenSSL's limit for a peer's certificate list (100 KiB
    by default): every OpenSSL-based client fails with "excessive message size"."""


class TlsHandshakeFailure(Exception):
    """The server aborted the handshake (an alert, or a close after it started answering)."""


class ClientCertificateRequired(Exception):
    """The server demanded or rejected our client certificate."""


class TlsClosed(Exception):
    """The connection ended while we expected application data."""


def client_context(settings: TlsSettings, *, verify: bool) -> ssl.SSLContext:
    """The context an OpenSSL-based MQTT client (paho, mosquitto_sub) would use with these settings.

    Cached: building a context and loading a CA store costs milliseconds, a probe must not pay that.
    The key is the settings themselves, with the files as they are on disk now (a renewed CA file is
    read again), less the per-broker settings that never shape a context (so a fleet with one CA file
    shares one context). A new ``tls.*`` setting is part of the key unless it is named here.
    """
    return _client_context(
        _shaping(settings), _VERIFY if verify else _ANY, _stamps(settings, trust_store=verify)
    )


def known_chain_context(settings: TlsSettings) -> ssl.SSLContext:
    """As ``client_context(verify=True)`` in everything but the chain and the name it is for, which it
    does not check: for a chain OpenSSL accepted before, which the caller compares (``judgements``).
    Without a trust store OpenSSL stops at the leaf's missing issuer, before any signature of the chain;
    the handshake's own signature is still checked."""
    return _client_context(_shaping(settings), _KNOWN, _stamps(settings, trust_store=False))


#: What a context checks: the chain and the name (_VERIFY), nothing (_ANY), all but the chain (_KNOWN).
_VERIFY, _ANY, _KNOWN = "verify", "any", "known"


def _stamps(settings: TlsSettings, *, trust_store: bool) -> tuple[tuple[int, int] | None, ...]:
    """The files a context is built from, as they are on disk now: the CA file only for a context that
    loads it (one that verifies), so a steady-state probe stats it once, for the verdict, not twice."""
    return (
        file_stamp(settings.ca_file) if settings.ca_file and trust_store else None,
        file_stamp(settings.cert_file) if settings.cert_file else None,
        file_stamp(settings.key_file) if settings.key_file else None,
    )


@lru_cache(maxsize=1024)
def _shaping(settings: TlsSettings) -> TlsSettings:
    """The settings less those that never shape a context (a copy per probe cost more than the probe's
    other bookkeeping)."""
    return dataclasses.replace(settings, **_NOT_SHAPING_A_CONTEXT)


@lru_cache(maxsize=256)
def _client_context(
    settings: TlsSettings, checks: str, stamps: tuple[tuple[int, int] | None, ...]
) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if checks == _KNOWN:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif checks == _VERIFY:
        context.check_hostname = True
        context.verify_mode = ssl.CERT_REQUIRED
        if settings.ca_file:
            context.load_verify_locations(cafile=settings.ca_file)
        else:
            context.load_default_certs()
    else:
        # The second, non-verifying connection only asks "does the broker answer MQTT?": accept any
        # certificate, even one too weak for the default security level.
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if settings.min_version:
        context.minimum_version = _TLS_VERSIONS[settings.min_version]
    if settings.max_version:
        context.maximum_version = _TLS_VERSIONS[settings.max_version]
    if settings.cert_file:
        context.load_cert_chain(settings.cert_file, settings.key_file, password=lambda: b"")
    if settings.alpn:
        context.set_alpn_protocols(list(settings.alpn))
    # Record per connection whether the server asked for a client certificate: under TLS 1.3 its
    # verdict on our certificate only arrives after the handshake, and without this we could not tell
    # "needs a client certificate" from "closed the connection".
    _install_message_hook(context)
    return context


def _install_message_hook(context: ssl.SSLContext) -> None:
    """Set the hook straight into the C slot when possible: ssl.py's ``_msg_callback`` property wraps
    every call to turn ints into enums, which cost ~5% of a probe's CPU here (profiled)."""
    hook = note_certificate_request
    hook.user_function = hook  # type: ignore[attr-defined]  # what ssl.py's getter reads back
    try:
        ssl._ssl._SSLContext._msg_callback.__set__(context, hook)  # type: ignore[attr-defined]  # noqa: SLF001 - ssl has no public hook for the chain as sent
    except (AttributeError, TypeError):  # another Python: the public-ish property works everywhere
        context._msg_callback = hook  # type: ignore[attr-defined]  # noqa: SLF001 - ssl has no public hook for the chain as sent


def note_certificate_request(
    conn: object, direction: str, version: object, content_type: object, msg_type: object, data: bytes
) -> None:
    if direction != "read":
        return
    if msg_type == _CERTIFICATE_REQUEST:
        owner = _owner(conn)
        if owner is not None:
            owner.certificate_requested = True
    elif msg_type == _NEW_SESSION_TICKET and content_type == _HANDSHAKE:
        # Under TLS 1.3 a server sends its tickets once it accepted our Finished (and certificate, if
        # it asked for one): they are its verdict, there is nothing more to wait for.
        owner = _owner(conn)
        if owner is not None:
            owner.ticket_received = True


def _owner(conn: object) -> TlsSession | None:
    reference = getattr(conn, "_probe_session", None)
    owner: TlsSession | None = reference() if reference is not None else None
    return owner


@dataclass(frozen=True, slots=True)
class VerifyError:
    code: int
    message: str


def _peer_chain_der(sslobj: ssl.SSLObject) -> tuple[bytes, ...]:
    """The chain exactly as the server sent it, leaf first, even after a failed verification."""
    public = getattr(sslobj, "get_unverified_chain", None)
    if public is not None:  # Python >= 3.13
        return tuple(bytes(der) for der in public() or ())
    inner = sslobj._sslobj  # type: ignore[attr-defined]  # Python 3.10-3.12  # noqa: SLF001 - ssl has no public hook for the chain as sent
    chain = inner.get_unverified_chain() or ()
    encoding = ssl._ssl.ENCODING_DER  # type: ignore[attr-defined]  # noqa: SLF001 - ssl has no public hook for the chain as sent
    return tuple(bytes(cert.public_bytes(encoding)) for cert in chain)


class TlsSession:
    """An SSLObject driven over an asyncio TCP stream. All waits are bounded by the caller's timeout."""

    def __init__(
        self,
        connection: Connection,
        context: ssl.SSLContext,
        server_hostname: str | None,
        *,
        sends_client_certificate: bool = False,
        keep_raw: bool = False,
    ) -> None:
        self._connection = connection
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._sslobj = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        # A weak reference: a cycle would keep every finished session -- and OpenSSL's buffers and
        # parsed chain under it -- alive until the garbage collector's next full pass.
        self._sslobj._probe_session = weakref.ref(self)  # type: ignore[attr-defined]  # see note_certificate_request  # noqa: SLF001 - ssl has no public hook for the chain as sent
        self._received = 0
        self._sent_client_certificate = sends_client_certificate
        self.certificate_requested = False
        #: a TLS 1.3 session ticket arrived: the server accepted the handshake (and our certificate)
        self.ticket_received = False
        self.chain_der: tuple[bytes, ...] = ()
        #: every byte the server sent, when a caller asked for them (``keep_raw``): bounded by
        #: MAX_HANDSHAKE_BYTES like the handshake itself
        self.raw: bytearray | None = bytearray() if keep_raw else None
        self.verify_error: VerifyError | None = None

    # -- low level ------------------------------------------------------------------------------
    def _flush(self) -> None:
        data = self._outgoing.read()
        if data:
            self._connection.write(data)

    async def _feed(self) -> bool:
        """Read from the socket into the TLS engine; False at EOF."""
        data = await self._connection.read(READ_CHUNK)
        if not data:
            self._incoming.write_eof()
            return False
        self._received += len(data)
        if self._received > MAX_HANDSHAKE_BYTES and not self.handshake_done:
            raise TlsProtocolError(f"server sent more than {MAX_HANDSHAKE_BYTES} bytes without finishing")
        if self.raw is not None:
            self.raw += data
        self._incoming.write(data)
        return True

    handshake_done = False

    # -- handshake ------------------------------------------------------------------------------
    async def handshake(self) -> None:
        """Run the handshake with the context's verification.

        On a verification failure ``verify_error`` is set, ``chain_der`` is still captured, and
        ssl.SSLCertVerificationError is raised. Other failures raise the classified exceptions above.
        """
        try:
            while True:
                try:
                    self._sslobj.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    self._flush()
                    eof = not await self._feed()
                    if eof and not self._received:
                        raise TlsProtocolError(
                            "the server closed the connection on our TLS ClientHello without answering: "
                            "is this a plaintext MQTT listener?"
                        ) from None
        except ssl.SSLCertVerificationError as exc:
            self.chain_der = _peer_chain_der(self._sslobj)
            self.verify_error = VerifyError(exc.verify_code, exc.verify_message or str(exc))
            self._flush()  # let the server see our alert
            raise
        except ssl.SSLError as exc:
            self.chain_der = _safe_chain(self._sslobj)
            raise self._classify_ssl_error(exc, during_handshake=True) from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            if not self._received:
                raise TlsProtocolError(f"connection reset on our TLS ClientHello: {exc}") from exc
            raise TlsHandshakeFailure(f"connection reset during the TLS handshake: {exc}") from exc
        self.handshake_done = True
        self.chain_der = _peer_chain_der(self._sslobj)
        # Our last flight (Finished) stays in the outgoing BIO: it leaves with the first write (CONNECT or
        # the WebSocket upgrade) in one send, or before any wait for the server (``_read_some``).

    def _classify_ssl_error(self, exc: ssl.SSLError, *, during_handshake: bool) -> Exception:
        reason = exc.reason or ""
        text = exc.verify_message if isinstance(exc, ssl.SSLCertVerificationError) else str(exc)
        if reason in _CLIENT_CERT_ALERTS or (
            self.certificate_requested and "ALERT" in reason and not self._sent_client_certificate
        ):
            return ClientCertificateRequired(_client_cert_detail(reason, self.certificate_requested))
        if "ALERT" in reason:
            return TlsHandshakeFailure(f"the server aborted the handshake: {reason.lower()} ({text})")
        if reason == "EXCESSIVE_MESSAGE_SIZE":
            return TlsCertificateTooLarge(
                f"the server's certificate message is larger than OpenSSL-based clients accept (100 KiB by "
                f"default; {self._received} bytes had arrived): {text}"
            )
        if isinstance(exc, ssl.SSLEOFError) or reason == "UNEXPECTED_EOF_WHILE_READING":
            if during_handshake and not self._received:
                return TlsProtocolError("the server closed the connection without answering our ClientHello")
            if self.certificate_requested:
                return ClientCertificateRequired(_client_cert_detail("", True))
            return TlsHandshakeFailure("the server closed the connection during the TLS handshake")
        if during_handshake:
            return TlsProtocolError(f"the server does not speak TLS: {reason.lower() or text}")
        return TlsHandshakeFailure(text)

    # -- after the handshake --------------------------------------------------------------------
    @property
    def version(self) -> str:
        return self._sslobj.version() or ""

    @property
    def cipher(self) -> str:
        cipher = self._sslobj.cipher()
        return cipher[0] if cipher else ""

    @property
    def alpn_protocol(self) -> str:
        return self._sslobj.selected_alpn_protocol() or ""

    async def await_client_certificate_verdict(self, wait: float) -> None:
        """TLS 1.3 sends the server's verdict on our client certificate after the handshake.

        When the server asked for a certificate, wait for its first post-handshake record (session
        tickets when it accepted us, an alert when not) before writing, so the alert is not lost in a
        connection reset. The tickets end the wait at once (0.1-1 ms after the handshake); ``wait`` only
        bounds it for a server that sends none. Brokers that do not ask for a certificate cost nothing.
        """
        if self.version != "TLSv1.3" or not self.certificate_requested:
            return
        try:
            async with asyncio.timeout(wait):
                await self._read_some(until=lambda: self.ticket_received)
        except TimeoutError:
            return  # no tickets and no alert: the server is waiting for us; go on
        except TlsClosed:
            raise ClientCertificateRequired(_client_cert_detail("", True)) from None

    async def _read_some(self, until: Callable[[], bool] | None = None) -> bytes:
        """Feed socket data into the engine until the engine yields plaintext, or (b"") ``until`` holds
        once the engine has taken in what arrived."""
        while True:
            try:
                data = self._sslobj.read(READ_CHUNK)
            except ssl.SSLWantReadError:
                if until is not None and until():
                    return b""
                await self._feed_more()
                continue
            except ssl.SSLZeroReturnError:
                raise TlsClosed("the server closed the TLS session") from None
            except ssl.SSLError as exc:
                raise self._read_error(exc) from exc
            if not data:
                raise TlsClosed("the server closed the TLS session")
            return data

    async def _feed_more(self) -> None:
        """Send what the engine has to say, then take in what the socket has (EOF included: the engine
        raises SSLZeroReturn/SSLEOFError at the next read)."""
        self._flush()
        try:
            await self._feed()
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise TlsClosed(f"connection reset: {exc}") from exc

    def _read_error(self, exc: ssl.SSLError) -> Exception:
        classified = self._classify_ssl_error(exc, during_handshake=False)
        if isinstance(classified, ClientCertificateRequired):
            return classified
        if isinstance(exc, ssl.SSLEOFError) or exc.reason == "UNEXPECTED_EOF_WHILE_READING":
            return TlsClosed("the server closed the connection")
        return TlsClosed(str(exc))

    async def read(self) -> bytes:
        """Some plaintext; b"" when the peer closed."""
        try:
            return await self._read_some()
        except TlsClosed:
            return b""

    async def write(self, data: bytes, *, flush: bool = True) -> None:
        """Send ``data``; with ``flush=False`` it waits in the engine for the next write or ``close``
        (the last message of a connection leaves with the close_notify, in one send)."""
        try:
            self._sslobj.write(data)
        except ssl.SSLError as exc:
            raise TlsClosed(str(exc)) from exc
        if flush:
            self._flush()

    def close(self) -> None:
        """Send close_notify (best effort) and close the socket without waiting for the peer."""
        try:
            if self.handshake_done:
                self._sslobj.unwrap()
        except (ssl.SSLError, ValueError):
            pass
        try:
            self._flush()
        except (OSError, RuntimeError):
            pass
        self._connection.close()


def _safe_chain(sslobj: ssl.SSLObject) -> tuple[bytes, ...]:
    try:
        return _peer_chain_der(sslobj)
    except (ssl.SSLError, ValueError, AttributeError):
        return ()


def _client_cert_detail(reason: str, requested: bool) -> str:
    what = f" ({reason.lower()})" if reason else ""
    if requested:
        return f"the broker requires a client certificate it accepts and refused the connection{what}"
    return f"the broker rejected the connection for its client certificate{what}"
