"""The I/O steps of one probe, phase by phase, for the orchestrator (``prober``): the TCP connect
(directly or through a proxy), the TLS session, the WebSocket upgrade, CONNECT/CONNACK, the optional round
trip and the credential-less version question. Each maps its exceptions to a ``Failure`` through the
tables of ``failures`` and raises ``Failed``; all share the probe's ``Clock`` (one deadline).
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from types import TracebackType

from mqtt_cert_exporter.config import BrokerConfig, MqttProtocol, ProxySettings
from mqtt_cert_exporter.connack import (
    PROTOCOL_5,
    UNSUPPORTED_VERSION_CODES,
    connack_meaning,
)
from mqtt_cert_exporter.probe.draft import Draft
from mqtt_cert_exporter.probe.failures import (
    CONNACK,
    CONNECT,
    TLS_HANDSHAKE,
    TUNNEL,
    WEBSOCKET_UPGRADE,
    websocket_closed,
)
from mqtt_cert_exporter.probe.negotiation import ANSWERLESS, LEARN_TIMEOUT
from mqtt_cert_exporter.probe.roundtrip import run_roundtrip
from mqtt_cert_exporter.probe.wire.addresses import literal_ip
from mqtt_cert_exporter.probe.wire.connection import Connection, connect
from mqtt_cert_exporter.probe.wire.mqtt import DISCONNECT, Connack, encode_connect, read_connack
from mqtt_cert_exporter.probe.wire.proxy import dialogue, tunnel
from mqtt_cert_exporter.probe.wire.tls import TlsClosed, TlsSession, client_context, known_chain_context
from mqtt_cert_exporter.probe.wire.transport import Stream, WebSocketStream
from mqtt_cert_exporter.results import (
    Failure,
    MqttFacts,
    Phase,
    Reason,
    Stage,
    WebSocketFacts,
)

#: Under TLS 1.3 a server's verdict on our client certificate follows the handshake: wait this long
#: for it (only when the server asked for a certificate).
CLIENT_CERT_VERDICT_WAIT = 0.5
#: Phases in declaration order, for sorting a probe's durations (not ``list(Phase).index``: per probe).
PHASE_ORDER = {phase: index for index, phase in enumerate(Phase)}


class Failed(Exception):
    """A phase failed (what it found before is in the probe's draft)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


#: What the scheduler passes to wait for a slot once TCP is connected (``exporter.admission``).
Admit = Callable[[], Awaitable[None]]


@dataclass
class Clock:
    deadline: float
    durations: list[tuple[Phase, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    admit: Admit | None = None

    def fork(self) -> Clock:
        """The same deadline and the phases so far, for one of several concurrent probes."""
        return Clock(self.deadline, list(self.durations), self.started, self.admit)

    async def admitted(self) -> None:
        """Wait for the scheduler's slot once connected. The wait is the exporter's queue, not the
        broker's time: it moves the deadline and is left out of the durations."""
        if self.admit is None:
            return
        waiting = time.monotonic()
        await self.admit()
        waited = time.monotonic() - waiting
        self.deadline += waited
        self.started += waited

    def phase(self, phase: Phase) -> _Span:
        """``with clock.phase(...)``: how long the block took, recorded also when it raised."""
        return _Span(self.durations, phase)

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def sorted_durations(self) -> tuple[tuple[Phase, float], ...]:
        return tuple(sorted(self.durations, key=lambda item: PHASE_ORDER[item[0]]))


class _Span:
    """A phase being timed (a class, not ``contextmanager``: a probe times up to eight, and the
    generator machinery cost more than the timing)."""

    __slots__ = ("_durations", "_phase", "_start")

    def __init__(self, durations: list[tuple[Phase, float]], phase: Phase) -> None:
        self._durations = durations
        self._phase = phase
        self._start = time.monotonic()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._durations.append((self._phase, time.monotonic() - self._start))


async def unverified_handshake(session: TlsSession) -> None:
    """A handshake with a context that verifies nothing (only a failure to speak TLS fails it)."""
    try:
        await session.handshake()  # bounded by the connection's deadline (``connect_tcp``)
    except TLS_HANDSHAKE.catches as exc:
        raise Failed(TLS_HANDSHAKE.failure(exc)) from None


async def client_certificate_verdict(session: TlsSession, clock: Clock) -> None:
    try:
        await session.await_client_certificate_verdict(min(CLIENT_CERT_VERDICT_WAIT, clock.remaining()))
    except TLS_HANDSHAKE.catches as exc:
        raise Failed(TLS_HANDSHAKE.failure(exc)) from None


def refusal(mqtt: MqttFacts | None) -> Failure | None:
    if mqtt is None or mqtt.connack_code in (None, 0):
        return None
    code = mqtt.connack_code
    assert code is not None
    meaning = connack_meaning(mqtt.protocol, code)
    if code == UNSUPPORTED_VERSION_CODES.get(mqtt.protocol):
        detail = (
            f"the broker does not speak MQTT {mqtt.requested or mqtt.protocol}: CONNACK {code} ({meaning})"
        )
        return Failure(Stage.MQTT, Reason.UNSUPPORTED_PROTOCOL, detail)
    return Failure(Stage.MQTT, Reason.REFUSED, f"CONNACK refused the connection: {code} ({meaning})")


async def ask_version(broker: BrokerConfig, clock: Clock, ip: str) -> tuple[Connack | None, bool]:
    """Send a v5 CONNECT without credentials on a connection of its own: (the CONNACK or None, whether
    the answer says something about the broker -- a failure before the CONNECT left says nothing)."""
    sent = False
    try:
        connection = await connect_tcp(ip or broker.target.host, broker.target.port, clock, broker.proxy)
        session = open_session(connection, broker, verify=False)  # trust was judged on the probe's connection
        try:
            async with asyncio.timeout(min(LEARN_TIMEOUT, clock.remaining())):
                await session.handshake()
                stream = await open_stream(session, broker, clock, Draft.of(broker, 0.0, ip=ip))
                await stream.write(encode_connect(protocol=PROTOCOL_5, client_id=client_id(broker)))
                sent = True
                answer = await read_connack(stream.read, PROTOCOL_5)
            if answer.code == 0:
                await stream.write(DISCONNECT, flush=False)
            return answer, True
        finally:
            session.close()
    except TimeoutError:
        return None, False
    except ANSWERLESS:
        return None, sent
    except Failed:
        return None, sent


#: Generated client identifiers: a random prefix per process and a counter, unique per connection (a
#: broker drops the older of two sessions with one identifier) without a random draw, a system call, per
#: probe. 24 bits of each keep the identifier's form and length (``mqtt-cert-exporter-`` + 12 hex digits).
_CLIENT_ID_PREFIX = f"mqtt-cert-exporter-{secrets.token_hex(3)}"
_CONNECTIONS = itertools.count()


def client_id(broker: BrokerConfig) -> str:
    return broker.mqtt.client_id or f"{_CLIENT_ID_PREFIX}{next(_CONNECTIONS) & 0xFFFFFF:06x}"


def proxy_resolves(broker: BrokerConfig) -> bool:
    """Whether the proxy, not we, resolves the broker's name (socks5h://, http:// CONNECT)."""
    if broker.proxy is None or not broker.proxy.resolves_names:
        return False
    return literal_ip(broker.target.host) is None


def host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def connect_tcp(
    host: str, port: int, clock: Clock, proxy: ProxySettings | None = None, *, bind: bool = True
) -> Connection:
    """TCP to ``host`` (an IP, or a name the proxy resolves), directly or through ``proxy``. The
    connection's reads end at the clock's deadline (``Connection.expire_at``), unless ``bind`` is False:
    the caller binds it once the deadline is final (after the scheduler's slot)."""
    where = host_port(host, port)
    try:
        async with asyncio.timeout(clock.remaining()):
            connection = await connect(host, port) if proxy is None else await connect(proxy.host, proxy.port)
    except CONNECT.catches as exc:
        raise Failed(CONNECT.failure(exc, where if proxy is None else f"proxy {proxy}")) from None
    if proxy is not None:
        try:
            async with asyncio.timeout(clock.remaining()):
                await tunnel(connection, dialogue(proxy, host, port))
        except TUNNEL.catches as exc:
            connection.close()
            raise Failed(TUNNEL.failure(exc, f"proxy {proxy} -> {where}")) from None
    if bind:
        connection.expire_at(clock.deadline)
    return connection


async def open_stream(session: TlsSession, broker: BrokerConfig, clock: Clock, draft: Draft) -> Stream:
    """mqtts: MQTT goes straight over TLS. wss: the HTTP upgrade first, then MQTT in binary frames.

    The draft gains the upgrade's answer, also when the upgrade failed.
    """
    if broker.target.scheme != "wss":
        return session
    stream = WebSocketStream(session)
    failure: Failure | None = None
    with clock.phase(Phase.WEBSOCKET):
        try:
            await stream.upgrade(
                host=broker.server_name.strip("[]"), port=broker.target.port, path=broker.target.path
            )
        except WEBSOCKET_UPGRADE.catches as exc:
            failure = WEBSOCKET_UPGRADE.failure(exc, broker.target.path)
    if stream.response is not None:
        draft.websocket = WebSocketFacts(stream.response.status, stream.subprotocol)
    if failure is not None:
        raise Failed(failure)
    return stream


async def round_trip(
    broker: BrokerConfig, protocol: MqttProtocol, clock: Clock, draft: Draft, *, verified: bool
) -> None:
    """The optional publish/receive round trip, on a connection of its own (aiomqtt), in ``protocol``."""
    if broker.mqtt.roundtrip is None or draft.mqtt is None or not draft.mqtt.accepted:
        return
    with clock.phase(Phase.ROUNDTRIP):
        draft.roundtrip = await run_roundtrip(
            speaking(broker, protocol),
            ip=draft.ip or None,
            context=client_context(broker.tls, verify=verified),
            budget=clock.remaining(),
            unverified=not verified,
        )


def open_session(
    connection: Connection, broker: BrokerConfig, *, verify: bool, known_chain: bool = False
) -> TlsSession:
    """A TLS session on ``connection``: verifying the chain and the name, or not at all, or (``known_chain``)
    checking all but the chain, which the caller compares with one OpenSSL accepted before."""
    server_name = broker.server_name.strip("[]")
    try:
        context = (
            known_chain_context(broker.tls) if known_chain else client_context(broker.tls, verify=verify)
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        # The files were usable when the config was loaded; they changed since.
        connection.close()
        detail = f"cannot load the configured CA or client certificate files: {exc}"
        raise Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, detail)) from None
    return TlsSession(connection, context, server_name, sends_client_certificate=bool(broker.tls.cert_file))


def sends_credentials(broker: BrokerConfig) -> bool:
    return broker.mqtt.username is not None or broker.mqtt.password is not None


def speaking(broker: BrokerConfig, protocol: MqttProtocol) -> BrokerConfig:
    return replace(broker, mqtt=replace(broker.mqtt, protocol=protocol))


async def exchange(
    stream: Stream, broker: BrokerConfig, protocol: MqttProtocol, *, unverified: bool = False
) -> MqttFacts:
    answer = await connack(stream, broker, protocol)
    return await after_connack(stream, protocol, answer, unverified=unverified)


async def connack(stream: Stream, broker: BrokerConfig, protocol: MqttProtocol) -> Connack:
    """Send the CONNECT in ``protocol``, read the CONNACK; failures as the CONNACK table says."""
    settings = broker.mqtt
    connect = encode_connect(
        protocol=protocol,
        client_id=client_id(broker),
        username=settings.username,
        password=settings.password.reveal() if settings.password else None,
        keepalive=settings.keepalive,
    )
    try:
        await stream.write(connect)
        connack = await read_connack(stream.read, protocol)  # bounded by the connection's deadline
    except CONNACK.catches as exc:
        if isinstance(stream, WebSocketStream) and stream.close_status is not None:
            raise Failed(websocket_closed(*stream.close_status)) from None
        raise Failed(CONNACK.failure(exc)) from None
    return connack


async def after_connack(
    stream: Stream, protocol: MqttProtocol, connack: Connack, *, unverified: bool
) -> MqttFacts:
    if connack.code == 0:
        try:
            await stream.write(DISCONNECT, flush=False)  # leaves with the close_notify
        except (TlsClosed, OSError):
            pass  # the broker already answered what we asked; a close race is not a failure
    return MqttFacts(
        protocol=connack.protocol,
        connack_code=connack.code,
        unverified_connection=unverified,
        requested=protocol,
    )
