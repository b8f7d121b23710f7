"""One probe of one broker: resolve, connect, TLS (verdict + chain), CONNECT/CONNACK, DISCONNECT.

Every phase shares one deadline (the broker's ``timeout``), so a broker that accepts and then says
nothing costs only its own timeout. The outcome is one immutable ``ProbeResult``.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from exporter.config import BrokerConfig
from exporter.probe import chain as chains
from exporter.probe import files
from exporter.probe.aia import AiaFetcher
from exporter.probe.mqtt import (
    DISCONNECT,
    PROTOCOL_5,
    PacketError,
    connack_meaning,
    encode_connect,
    read_connack,
)
from exporter.probe.tls import (
    ClientCertificateRequired,
    TlsClosed,
    TlsHandshakeFailure,
    TlsProtocolError,
    TlsSession,
    client_context,
)
from exporter.results import (
    Failure,
    MqttFacts,
    Phase,
    ProbeResult,
    Reason,
    Stage,
    TlsFacts,
    TrustVerdict,
)

log = logging.getLogger(__name__)

#: Under TLS 1.3 a server's verdict on our client certificate follows the handshake: wait this long
#: for it (only when the server asked for a certificate).
CLIENT_CERT_VERDICT_WAIT = 0.5
#: Spend at most this share of what is left of the deadline fetching a missing intermediate.
AIA_TIMEOUT = 3.0


class _Failed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


@dataclass
class _Clock:
    deadline: float
    durations: list[tuple[Phase, float]] = field(default_factory=list)

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations.append((phase, time.monotonic() - start))

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


@dataclass(frozen=True, slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter


class Prober:
    """Runs probes. Holds what is shared between probes (the AIA cache)."""

    def __init__(self, aia: AiaFetcher | None = None) -> None:
        self.aia = aia or AiaFetcher()

    async def probe(self, broker: BrokerConfig) -> ProbeResult:
        started = time.time()
        clock = _Clock(time.monotonic() + broker.timeout)
        state = _State()
        failure: Failure | None = None
        try:
            with clock.phase(Phase.TOTAL):
                failure = await self._run(broker, clock, state)
        except _Failed as failed:
            failure = failed.failure
        return ProbeResult(
            broker=broker.name,
            address=broker.address,
            ip=state.ip,
            started=started,
            finished=time.time(),
            durations=tuple(sorted(clock.durations, key=lambda item: list(Phase).index(item[0]))),
            failure=failure,
            tls=state.tls,
            mqtt=state.mqtt,
            secondary_failure=state.secondary_failure,
        )

    async def _run(self, broker: BrokerConfig, clock: _Clock, state: _State) -> Failure | None:
        with clock.phase(Phase.RESOLVE):
            state.ip = await _resolve(broker, clock)
        with clock.phase(Phase.CONNECT):
            connection = await _connect(state.ip, broker.target.port, clock)
        session = _session(connection, broker, verify=True)
        try:
            with clock.phase(Phase.TLS):
                verified = await self._handshake(session, broker, clock, state)
            if not verified:
                session.close()
                await self._mqtt_over_unverified(broker, clock, state)
                assert state.tls is not None
                problems = ", ".join(state.tls.verdict.problems)
                return Failure(Stage.TRUST, Reason.UNTRUSTED, f"certificate chain not trusted: {problems}")
            with clock.phase(Phase.MQTT):
                state.mqtt = await _exchange(session, broker, clock)
        finally:
            session.close()
        return _refusal(state.mqtt)

    async def _handshake(
        self, session: TlsSession, broker: BrokerConfig, clock: _Clock, state: _State
    ) -> bool:
        """True when the chain verified; False when it did not (state.tls then says why)."""
        verify: tuple[int, str] | None = None
        try:
            async with asyncio.timeout(clock.remaining()):
                try:
                    await session.handshake()
                except ssl.SSLCertVerificationError:
                    assert session.verify_error is not None
                    verify = (session.verify_error.code, session.verify_error.message)
        except TimeoutError:
            raise _Failed(Failure(Stage.TLS, Reason.TIMEOUT, "TLS handshake timed out")) from None
        except TlsProtocolError as exc:
            raise _Failed(Failure(Stage.TLS, Reason.PROTOCOL_ERROR, str(exc))) from None
        except TlsHandshakeFailure as exc:
            raise _Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, str(exc))) from None
        except ClientCertificateRequired as exc:
            raise _Failed(Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))) from None
        except OSError as exc:
            raise _Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, f"TLS handshake: {exc}")) from None
        verdict = await self._verdict(session, broker, clock, verify)
        state.tls = TlsFacts(
            version=session.version if verify is None else "",
            cipher=session.cipher if verify is None else "",
            chain=tuple(chains.facts_of(der) for der in session.chain_der),
            verdict=verdict,
            alpn_protocol=session.alpn_protocol if verify is None else "",
        )
        if verify is not None:
            return False
        try:
            await session.await_client_certificate_verdict(min(CLIENT_CERT_VERDICT_WAIT, clock.remaining()))
        except ClientCertificateRequired as exc:
            raise _Failed(Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))) from None
        return True

    async def _verdict(
        self, session: TlsSession, broker: BrokerConfig, clock: _Clock, verify: tuple[int, str] | None
    ) -> TrustVerdict:
        presented = [chains.parse_der(der) for der in session.chain_der]
        store = files.trust_store(broker.tls.ca_file)
        extra: list[chains.Parsed] = []
        if broker.tls.intermediates_file:
            extra.extend(files.certificates_in(broker.tls.intermediates_file))
        code = verify[0] if verify else None
        if presented and code in chains.CHAIN_ERRORS:
            for url in chains.missing_issuer_urls(presented, extra, store):
                extra.extend(await self.aia.fetch(url, min(AIA_TIMEOUT, clock.remaining())))
        return chains.classify(
            presented,
            verify_code=code,
            verify_message=verify[1] if verify else "",
            server_name=broker.server_name,
            now=time.time(),
            store=store,
            extra_intermediates=extra,
        )

    async def _mqtt_over_unverified(self, broker: BrokerConfig, clock: _Clock, state: _State) -> None:
        """The chain is untrusted; does the broker still answer MQTT? (broker down vs certificate bad)"""
        try:
            connection = await _connect(state.ip, broker.target.port, clock)
            session = _session(connection, broker, verify=False)
            try:
                try:
                    async with asyncio.timeout(clock.remaining()):
                        await session.handshake()
                except TimeoutError:
                    raise _Failed(Failure(Stage.TLS, Reason.TIMEOUT, "TLS handshake timed out")) from None
                except (TlsProtocolError, TlsHandshakeFailure, ssl.SSLError, OSError) as exc:
                    raise _Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, str(exc))) from None
                except ClientCertificateRequired as exc:
                    raise _Failed(Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))) from None
                if state.tls is not None:
                    state.tls = _with_session_facts(state.tls, session)
                with clock.phase(Phase.MQTT):
                    state.mqtt = await _exchange(session, broker, clock, unverified=True)
            finally:
                session.close()
            state.secondary_failure = _refusal(state.mqtt)
        except _Failed as failed:
            state.secondary_failure = failed.failure


@dataclass
class _State:
    ip: str = ""
    tls: TlsFacts | None = None
    mqtt: MqttFacts | None = None
    secondary_failure: Failure | None = None


def _with_session_facts(tls: TlsFacts, session: TlsSession) -> TlsFacts:
    """The failed verifying handshake cannot tell version and cipher; the unverified one can."""
    return TlsFacts(
        version=session.version,
        cipher=session.cipher,
        chain=tls.chain,
        verdict=tls.verdict,
        alpn_protocol=session.alpn_protocol,
    )


def _refusal(mqtt: MqttFacts | None) -> Failure | None:
    if mqtt is None or mqtt.connack_code in (None, 0):
        return None
    code = mqtt.connack_code
    assert code is not None
    meaning = connack_meaning(mqtt.protocol, code)
    return Failure(Stage.MQTT, Reason.REFUSED, f"CONNACK refused the connection: {code} ({meaning})")


async def _resolve(broker: BrokerConfig, clock: _Clock) -> str:
    host = broker.target.host
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(clock.remaining()):
            infos = await loop.getaddrinfo(host, broker.target.port, type=socket.SOCK_STREAM)
    except TimeoutError:
        raise _Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"resolving {host} timed out")) from None
    except (socket.gaierror, UnicodeError) as exc:
        raise _Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"cannot resolve {host}: {exc}")) from None
    addresses = [str(info[4][0]) for info in infos]
    if not addresses:
        raise _Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"{host} has no address"))
    # Prefer IPv4, fall back to IPv6: what works on a v4-only host (Docker's default) and everywhere else.
    v4 = [a for a in addresses if ":" not in a]
    return (v4 or addresses)[0]


async def _connect(ip: str, port: int, clock: _Clock) -> _Connection:
    where = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    try:
        async with asyncio.timeout(clock.remaining()):
            reader, writer = await asyncio.open_connection(ip, port)
    except TimeoutError:
        raise _Failed(Failure(Stage.CONNECT, Reason.TIMEOUT, f"TCP connect to {where} timed out")) from None
    except ConnectionRefusedError:
        raise _Failed(Failure(Stage.CONNECT, Reason.REFUSED, f"connection to {where} refused")) from None
    except ConnectionResetError:
        raise _Failed(Failure(Stage.CONNECT, Reason.RESET, f"connection to {where} reset")) from None
    except OSError as exc:
        reason = Reason.TIMEOUT if exc.errno == errno.ETIMEDOUT else Reason.UNREACHABLE
        raise _Failed(
            Failure(Stage.CONNECT, reason, f"cannot connect to {where}: {exc.strerror or exc}")
        ) from None
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _Connection(reader, writer)


def _session(connection: _Connection, broker: BrokerConfig, *, verify: bool) -> TlsSession:
    server_name = broker.server_name.strip("[]")
    return TlsSession(
        connection.reader,
        connection.writer,
        client_context(broker.tls, verify=verify),
        server_name,
        sends_client_certificate=bool(broker.tls.cert_file),
    )


async def _exchange(
    session: TlsSession, broker: BrokerConfig, clock: _Clock, *, unverified: bool = False
) -> MqttFacts:
    settings = broker.mqtt
    connect = encode_connect(
        protocol=settings.protocol,
        client_id=settings.client_id or f"mqtt-cert-exporter-{uuid.uuid4().hex[:12]}",
        username=settings.username,
        password=settings.password.reveal() if settings.password else None,
        keepalive=settings.keepalive,
    )
    try:
        async with asyncio.timeout(clock.remaining()):
            await session.write(connect)
            connack = await read_connack(session.read, settings.protocol)
    except TimeoutError:
        raise _Failed(Failure(Stage.MQTT, Reason.TIMEOUT, "no CONNACK before the deadline")) from None
    except PacketError as exc:
        raise _Failed(Failure(Stage.MQTT, Reason.PROTOCOL_ERROR, f"invalid CONNACK: {exc}")) from None
    except ClientCertificateRequired as exc:
        raise _Failed(Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))) from None
    except (EOFError, TlsClosed, OSError) as exc:
        raise _Failed(
            Failure(Stage.MQTT, Reason.CLOSED, f"connection closed before CONNACK: {exc}")
        ) from None
    if connack.code == 0:
        try:
            await session.write(DISCONNECT)
        except (TlsClosed, OSError):
            pass  # the broker already answered what we asked; a close race is not a failure
    return MqttFacts(
        protocol=settings.protocol or PROTOCOL_5, connack_code=connack.code, unverified_connection=unverified
    )
