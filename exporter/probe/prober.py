"""One probe of one broker: resolve, connect, TLS (verdict + chain), CONNECT/CONNACK, DISCONNECT.

Every phase shares one deadline (the broker's ``timeout``), so a broker that accepts and then says
nothing costs only its own timeout. The outcome is one immutable ``ProbeResult``: it starts as a draft
(broker, address, start time) and each phase returns a new one with its facts added (``replace``);
the checks around the chain complete it (``Lifecycle.complete``). No mutable state is copied into it.

Around that core: ``wss://`` brokers get the WebSocket upgrade between TLS and MQTT (the CONNACK then
travels in frames, see ``wire.transport``); ``proxy_url`` tunnels the TCP connect; ``mqtt.roundtrip``
adds a publish/receive round trip; ``addresses: all`` probes every address of the name concurrently,
under the same deadline, one result each (``probe_group``).

Exceptions become failures through the tables of ``exporter.probe.failures``, one per phase, shared by
both connections.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.certs import chain as chains
from mqtt_cert_exporter.certs import files
from mqtt_cert_exporter.certs.parse import Parsed, parse_der, parsed_cache_size
from mqtt_cert_exporter.config import BrokerConfig, ProxySettings
from mqtt_cert_exporter.connack import PROTOCOL_5, PROTOCOL_AUTO, UNSUPPORTED_VERSION_CODES, connack_meaning
from mqtt_cert_exporter.probe.failures import (
    CONNACK,
    CONNECT,
    RESOLVE,
    TLS_HANDSHAKE,
    TUNNEL,
    WEBSOCKET_UPGRADE,
    websocket_closed,
)
from mqtt_cert_exporter.probe.lifecycle import Lifecycle
from mqtt_cert_exporter.probe.lifecycle.aia import AiaFetcher
from mqtt_cert_exporter.probe.lifecycle.crl import CrlFetcher
from mqtt_cert_exporter.probe.negotiation import ANSWERLESS, LEARN_TIMEOUT, ProtocolMemory, Where, spoken
from mqtt_cert_exporter.probe.roundtrip import run_roundtrip
from mqtt_cert_exporter.probe.secondlook import second_look
from mqtt_cert_exporter.probe.wire.addresses import family_name, literal_ip, select_addresses
from mqtt_cert_exporter.probe.wire.connection import Connection, connect
from mqtt_cert_exporter.probe.wire.mqtt import DISCONNECT, Connack, encode_connect, read_connack
from mqtt_cert_exporter.probe.wire.proxy import dialogue, tunnel
from mqtt_cert_exporter.probe.wire.tls import TlsClosed, TlsSession, client_context
from mqtt_cert_exporter.probe.wire.transport import Stream, WebSocketStream
from mqtt_cert_exporter.results import (
    CacheSize,
    Failure,
    MqttFacts,
    Phase,
    ProbeResult,
    Reason,
    Stage,
    TlsFacts,
    TrustVerdict,
    WebSocketFacts,
)

log = logs.get_logger(__name__)

#: Under TLS 1.3 a server's verdict on our client certificate follows the handshake: wait this long
#: for it (only when the server asked for a certificate).
CLIENT_CERT_VERDICT_WAIT = 0.5
#: Phases in declaration order, for sorting a probe's durations (not ``list(Phase).index``: per probe).
_PHASE_ORDER = {phase: index for index, phase in enumerate(Phase)}
#: Spend at most this share of what is left of the deadline fetching a missing intermediate.
AIA_TIMEOUT = 3.0

#: Resolves a host name to its addresses (IP strings); ``getaddrinfo`` unless a test injects another.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
#: The chain as sent, parsed: for what runs after the probe (revocation), never part of the result.
Presented = tuple[Parsed, ...]
#: What the scheduler passes to wait for a slot once TCP is connected (``exporter.admission``).
Admit = Callable[[], Awaitable[None]]


async def getaddrinfo_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _Failed(Exception):
    """A phase failed; ``draft`` when the phase had added facts to the draft before it failed."""

    def __init__(self, failure: Failure, draft: ProbeResult | None = None) -> None:
        super().__init__(failure.detail)
        self.failure = failure
        self.draft = draft


@dataclass
class _Clock:
    deadline: float
    durations: list[tuple[Phase, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    admit: Admit | None = None

    def fork(self) -> _Clock:
        """The same deadline and the phases so far, for one of several concurrent probes."""
        return _Clock(self.deadline, list(self.durations), self.started, self.admit)

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

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations.append((phase, time.monotonic() - start))

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def sorted_durations(self) -> tuple[tuple[Phase, float], ...]:
        return tuple(sorted(self.durations, key=lambda item: _PHASE_ORDER[item[0]]))


def _draft(broker: BrokerConfig, started: float, *, ip: str = "", address_label: str = "") -> ProbeResult:
    """A result before any phase ran: what the probe adds to it comes phase by phase."""
    return ProbeResult(
        broker=broker.name,
        address=broker.address,
        ip=ip,
        started=started,
        finished=started,
        durations=(),
        failure=None,
        address_label=address_label,
    )


class Prober:
    """Runs probes. Holds what is shared between probes (the AIA cache, the resolver)."""

    def __init__(
        self,
        aia: AiaFetcher | None = None,
        *,
        crl: CrlFetcher | None = None,
        legacy_tls_interval: float | None = None,
        resolver: Resolver | None = None,
    ) -> None:
        self.aia = aia or AiaFetcher()
        self.verdicts = chains.VerdictCache()
        #: ``mqtt.protocol: auto``: the version each broker speaks, learned without credentials
        self.protocols = ProtocolMemory()
        self.resolver: Resolver = resolver or getaddrinfo_resolver
        #: around the chain (served file, client certificate, CRLs, legacy TLS, lints); never fails a probe
        self.lifecycle = Lifecycle(crl or CrlFetcher(), legacy_tls_interval)

    def cache_sizes(self) -> tuple[CacheSize, ...]:
        """The caches brokers can grow (by the URLs their certificates name), for the exporter's metrics."""
        return (
            self.lifecycle.crl.size(),
            self.aia.size(),
            parsed_cache_size(),
            chains.signature_cache_size(),
            self.verdicts.size(),
        )

    async def probe(self, broker: BrokerConfig, admit: Admit | None = None) -> ProbeResult:
        """One probe at one address: the first of the name, as ``ip_protocol`` orders them."""
        clock = _Clock(time.monotonic() + broker.timeout, admit=admit)
        return await self._probe(broker, clock, _draft(broker, time.time()))

    async def probe_group(self, broker: BrokerConfig, admit: Admit | None = None) -> tuple[ProbeResult, ...]:
        """What the scheduler runs: a broker's results. One for most brokers (``probe``); with
        ``addresses: all`` one per address of the name, probed concurrently under the one deadline,
        each labelled with its address.

        A name that does not resolve gives one unlabelled result (``resolve``/``dns_error``).
        ``admit``: awaited once TCP is connected, before the handshake (the scheduler's slot).
        """
        if broker.addresses != "all":
            return (await self.probe(broker, admit),)
        started = time.time()
        clock = _Clock(time.monotonic() + broker.timeout, admit=admit)
        try:
            with clock.phase(Phase.RESOLVE):
                ips = await self._resolve(broker, clock)
        except _Failed as failed:
            return (
                await self._complete(broker, clock, replace(_draft(broker, started), failure=failed.failure)),
            )
        probes = [
            self._probe(broker, clock.fork(), _draft(broker, started, ip=ip, address_label=ip)) for ip in ips
        ]
        return tuple(await asyncio.gather(*probes))

    async def _probe(self, broker: BrokerConfig, clock: _Clock, draft: ProbeResult) -> ProbeResult:
        draft, presented = await self._run(broker, clock, draft)
        if broker.mqtt.protocol == PROTOCOL_AUTO and _may_be_the_version(
            draft.failure or draft.secondary_failure
        ):
            self.protocols.forget(_where(broker, draft))  # learn it again next time
        return await self._complete(broker, clock, draft, presented)

    async def _complete(
        self, broker: BrokerConfig, clock: _Clock, draft: ProbeResult, presented: Presented = ()
    ) -> ProbeResult:
        clock.durations.append((Phase.TOTAL, time.monotonic() - clock.started))
        timed = replace(draft, durations=clock.sorted_durations())
        result = await self.lifecycle.complete(broker, timed, presented, deadline=clock.deadline)
        return replace(result, finished=time.time())

    async def _run(
        self, broker: BrokerConfig, clock: _Clock, draft: ProbeResult
    ) -> tuple[ProbeResult, Presented]:
        """The probe proper: the draft with every fact the phases found, and the failure that ended it."""
        presented: Presented = ()
        try:
            if not draft.ip and not _proxy_resolves(broker):
                with clock.phase(Phase.RESOLVE):
                    draft = replace(draft, ip=(await self._resolve(broker, clock))[0])
            with clock.phase(Phase.CONNECT):
                connection = await _connect(
                    draft.ip or broker.target.host, broker.target.port, clock, broker.proxy
                )
            session = _session(connection, broker, verify=True)
            try:
                await clock.admitted()
                with clock.phase(Phase.TLS):
                    tls, presented, verified = await self._handshake(session, broker, clock)
                    draft = replace(draft, tls=tls)
                    if verified:
                        await _client_certificate_verdict(session, clock)
                if not verified:
                    session.close()
                    negotiated = await self._negotiated(broker, clock, draft)
                    draft = await self._mqtt_over_unverified(negotiated, clock, draft)
                    problems = ", ".join(tls.verdict.problems)
                    failure = Failure(
                        Stage.TRUST, Reason.UNTRUSTED, f"certificate chain not trusted: {problems}"
                    )
                    return replace(draft, failure=failure), presented
                broker = await self._negotiated(broker, clock, draft)
                stream, draft = await _open_stream(session, broker, clock, draft)
                with clock.phase(Phase.MQTT):
                    draft = replace(draft, mqtt=await _exchange(stream, broker, clock))
            finally:
                session.close()
            refused = _refusal(draft.mqtt)
            if refused is not None:
                return replace(draft, failure=refused), presented
            draft = await _roundtrip(broker, clock, draft, verified=True)
            return replace(draft, failure=draft.roundtrip.failure if draft.roundtrip else None), presented
        except _Failed as failed:
            draft = replace(failed.draft or draft, failure=failed.failure)
            return await second_look(broker, draft, clock.remaining()), presented

    async def _negotiated(self, broker: BrokerConfig, clock: _Clock, draft: ProbeResult) -> BrokerConfig:
        """The broker with ``mqtt.protocol: auto`` replaced by the version it speaks (remembered, or
        learned now on a connection of its own with a CONNECT that carries no credentials)."""
        if broker.mqtt.protocol != PROTOCOL_AUTO:
            return broker
        where = _where(broker, draft)
        protocol = self.protocols.get(where)
        if protocol is None:
            answer, definite = await _ask_version(broker, clock.fork(), draft.ip)
            protocol = spoken(answer)
            if definite:
                self.protocols.learn(where, protocol)
        return replace(broker, mqtt=replace(broker.mqtt, protocol=protocol))

    async def _resolve(self, broker: BrokerConfig, clock: _Clock) -> list[str]:
        """The addresses to probe, best first (see ``select_addresses``); never empty."""
        host = broker.target.host
        literal = literal_ip(host)
        if literal is not None:
            return [literal]
        try:
            async with asyncio.timeout(clock.remaining()):
                candidates = await self.resolver(host, broker.target.port)
        except RESOLVE.catches as exc:
            raise _Failed(RESOLVE.failure(exc, host)) from None
        addresses = select_addresses(candidates, broker.ip_protocol)
        if not addresses:
            family = family_name(broker.ip_protocol)
            raise _Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"{host} has no {family} address"))
        return addresses

    async def _handshake(
        self, session: TlsSession, broker: BrokerConfig, clock: _Clock
    ) -> tuple[TlsFacts, Presented, bool]:
        """The TLS facts, the chain as presented, and whether the chain verified (else the facts say why)."""
        verify: tuple[int, str] | None = None
        try:
            async with asyncio.timeout(clock.remaining()):
                try:
                    await session.handshake()
                except ssl.SSLCertVerificationError:
                    assert session.verify_error is not None
                    verify = (session.verify_error.code, session.verify_error.message)
        except TLS_HANDSHAKE.catches as exc:
            raise _Failed(TLS_HANDSHAKE.failure(exc)) from None
        presented = tuple(parse_der(der) for der in session.chain_der)
        verdict = await self._verdict(session.chain_der, presented, broker, clock, verify)
        tls = TlsFacts(
            version=session.version if verify is None else "",
            cipher=session.cipher if verify is None else "",
            chain=tuple(parsed.facts for parsed in presented),
            verdict=verdict,
            alpn_protocol=session.alpn_protocol if verify is None else "",
        )
        return tls, presented, verify is None

    async def _verdict(
        self,
        chain_der: tuple[bytes, ...],
        presented: Presented,
        broker: BrokerConfig,
        clock: _Clock,
        verify: tuple[int, str] | None,
    ) -> TrustVerdict:
        """The verdict on the chain: remembered from an earlier probe while nothing it depends on changed."""
        store = files.trust_store(broker.tls.ca_file)
        configured = (
            files.certificates_in(broker.tls.intermediates_file) if broker.tls.intermediates_file else ()
        )
        key = (chain_der, verify, broker.server_name, store, configured)
        now = time.time()
        known = self.verdicts.get(key, now)
        if known is not None:
            return known
        extra = list(configured)
        code = verify[0] if verify else None
        if presented and code in chains.CHAIN_ERRORS:
            for url in chains.missing_issuer_urls(presented, extra, store):
                extra.extend(await self.aia.fetch(url, min(AIA_TIMEOUT, clock.remaining())))
        verdict = chains.classify(
            presented,
            verify_code=code,
            verify_message=verify[1] if verify else "",
            server_name=broker.server_name,
            now=now,
            store=store,
            extra_intermediates=extra,
        )
        if code not in chains.CHAIN_ERRORS:  # else it rests on AIA downloads, which have their own cache
            judged = [p.facts for p in presented] + [p.facts for p in extra]
            if verdict.anchor is not None:
                judged.append(verdict.anchor)
            self.verdicts.put(key, verdict, judged, now)
        return verdict

    async def _mqtt_over_unverified(
        self, broker: BrokerConfig, clock: _Clock, draft: ProbeResult
    ) -> ProbeResult:
        """The chain is untrusted; does the broker still answer MQTT? (broker down vs certificate bad)

        The failures of this second connection go to ``secondary_failure``, mapped by the same tables.
        """
        try:
            connection = await _connect(
                draft.ip or broker.target.host, broker.target.port, clock, broker.proxy
            )
            session = _session(connection, broker, verify=False)
            try:
                try:
                    async with asyncio.timeout(clock.remaining()):
                        await session.handshake()
                except TLS_HANDSHAKE.catches as exc:
                    raise _Failed(TLS_HANDSHAKE.failure(exc)) from None
                if draft.tls is not None:
                    # The failed verifying handshake cannot tell version and cipher; this one can.
                    facts = replace(
                        draft.tls,
                        version=session.version,
                        cipher=session.cipher,
                        alpn_protocol=session.alpn_protocol,
                    )
                    draft = replace(draft, tls=facts)
                stream, draft = await _open_stream(session, broker, clock, draft)
                with clock.phase(Phase.MQTT):
                    draft = replace(draft, mqtt=await _exchange(stream, broker, clock, unverified=True))
            finally:
                session.close()
        except _Failed as failed:
            return replace(failed.draft or draft, secondary_failure=failed.failure)
        refused = _refusal(draft.mqtt)
        if refused is not None:
            return replace(draft, secondary_failure=refused)
        # ACL or routing problems are worth knowing even while the certificate is bad.
        return await _roundtrip(broker, clock, draft, verified=False)


async def _client_certificate_verdict(session: TlsSession, clock: _Clock) -> None:
    try:
        await session.await_client_certificate_verdict(min(CLIENT_CERT_VERDICT_WAIT, clock.remaining()))
    except TLS_HANDSHAKE.catches as exc:
        raise _Failed(TLS_HANDSHAKE.failure(exc)) from None


def _refusal(mqtt: MqttFacts | None) -> Failure | None:
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


def _where(broker: BrokerConfig, draft: ProbeResult) -> Where:
    target = broker.target
    return Where(broker.name, draft.ip or target.host, target.port, target.scheme, target.path)


def _may_be_the_version(failure: Failure | None) -> bool:
    """Whether a failure may come from speaking the wrong MQTT version (then it is learned again)."""
    return failure is not None and failure.stage == Stage.MQTT and failure.reason != Reason.REFUSED


async def _ask_version(broker: BrokerConfig, clock: _Clock, ip: str) -> tuple[Connack | None, bool]:
    """Send a v5 CONNECT without credentials on a connection of its own: (the CONNACK or None, whether
    the answer says something about the broker -- a failure before the CONNECT left says nothing)."""
    sent = False
    try:
        connection = await _connect(ip or broker.target.host, broker.target.port, clock, broker.proxy)
        session = _session(connection, broker, verify=False)  # trust was judged on the probe's connection
        try:
            async with asyncio.timeout(min(LEARN_TIMEOUT, clock.remaining())):
                await session.handshake()
                stream, _ = await _open_stream(session, broker, clock, _draft(broker, 0.0, ip=ip))
                await stream.write(encode_connect(protocol=PROTOCOL_5, client_id=_client_id(broker)))
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
    except _Failed:
        return None, sent


def _client_id(broker: BrokerConfig) -> str:
    return broker.mqtt.client_id or f"mqtt-cert-exporter-{uuid.uuid4().hex[:12]}"


def _proxy_resolves(broker: BrokerConfig) -> bool:
    """Whether the proxy, not we, resolves the broker's name (socks5h://, http:// CONNECT)."""
    if broker.proxy is None or not broker.proxy.resolves_names:
        return False
    return literal_ip(broker.target.host) is None


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def _connect(host: str, port: int, clock: _Clock, proxy: ProxySettings | None = None) -> Connection:
    """TCP to ``host`` (an IP, or a name the proxy resolves), directly or through ``proxy``."""
    where = _host_port(host, port)
    try:
        async with asyncio.timeout(clock.remaining()):
            connection = await connect(host, port) if proxy is None else await connect(proxy.host, proxy.port)
    except CONNECT.catches as exc:
        raise _Failed(CONNECT.failure(exc, where if proxy is None else f"proxy {proxy}")) from None
    if proxy is None:
        return connection
    try:
        async with asyncio.timeout(clock.remaining()):
            await tunnel(connection, dialogue(proxy, host, port))
    except TUNNEL.catches as exc:
        connection.close()
        raise _Failed(TUNNEL.failure(exc, f"proxy {proxy} -> {where}")) from None
    return connection


async def _open_stream(
    session: TlsSession, broker: BrokerConfig, clock: _Clock, draft: ProbeResult
) -> tuple[Stream, ProbeResult]:
    """mqtts: MQTT goes straight over TLS. wss: the HTTP upgrade first, then MQTT in binary frames.

    The draft gains the upgrade's answer, also when the upgrade failed (``_Failed`` then carries it).
    """
    if broker.target.scheme != "wss":
        return session, draft
    stream = WebSocketStream(session)
    failure: Failure | None = None
    with clock.phase(Phase.WEBSOCKET):
        try:
            async with asyncio.timeout(clock.remaining()):
                await stream.upgrade(
                    host=broker.server_name.strip("[]"), port=broker.target.port, path=broker.target.path
                )
        except WEBSOCKET_UPGRADE.catches as exc:
            failure = WEBSOCKET_UPGRADE.failure(exc, broker.target.path)
    if stream.response is not None:
        draft = replace(draft, websocket=WebSocketFacts(stream.response.status, stream.subprotocol))
    if failure is not None:
        raise _Failed(failure, draft)
    return stream, draft


async def _roundtrip(
    broker: BrokerConfig, clock: _Clock, draft: ProbeResult, *, verified: bool
) -> ProbeResult:
    """The optional publish/receive round trip, on a connection of its own (aiomqtt)."""
    if broker.mqtt.roundtrip is None or draft.mqtt is None or not draft.mqtt.accepted:
        return draft
    with clock.phase(Phase.ROUNDTRIP):
        facts = await run_roundtrip(
            broker,
            ip=draft.ip or None,
            context=client_context(broker.tls, verify=verified),
            budget=clock.remaining(),
            unverified=not verified,
        )
    return replace(draft, roundtrip=facts)


def _session(connection: Connection, broker: BrokerConfig, *, verify: bool) -> TlsSession:
    server_name = broker.server_name.strip("[]")
    try:
        context = client_context(broker.tls, verify=verify)
    except (ssl.SSLError, OSError, ValueError) as exc:
        # The files were usable when the config was loaded; they changed since.
        connection.close()
        detail = f"cannot load the configured CA or client certificate files: {exc}"
        raise _Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, detail)) from None
    return TlsSession(connection, context, server_name, sends_client_certificate=bool(broker.tls.cert_file))


async def _exchange(
    stream: Stream, broker: BrokerConfig, clock: _Clock, *, unverified: bool = False
) -> MqttFacts:
    settings = broker.mqtt
    connect = encode_connect(
        protocol=settings.protocol,
        client_id=_client_id(broker),
        username=settings.username,
        password=settings.password.reveal() if settings.password else None,
        keepalive=settings.keepalive,
    )
    try:
        async with asyncio.timeout(clock.remaining()):
            await stream.write(connect)
            connack = await read_connack(stream.read, settings.protocol)
    except CONNACK.catches as exc:
        if isinstance(stream, WebSocketStream) and stream.close_status is not None:
            raise _Failed(websocket_closed(*stream.close_status)) from None
        raise _Failed(CONNACK.failure(exc)) from None
    if connack.code == 0:
        try:
            await stream.write(DISCONNECT, flush=False)  # leaves with the close_notify
        except (TlsClosed, OSError):
            pass  # the broker already answered what we asked; a close race is not a failure
    return MqttFacts(
        protocol=connack.protocol,
        connack_code=connack.code,
        unverified_connection=unverified,
        requested=settings.protocol or PROTOCOL_5,
    )
