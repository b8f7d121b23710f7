"""One probe of one broker: resolve, connect, TLS (verdict + chain), CONNECT/CONNACK, DISCONNECT.

Every phase shares one deadline (the broker's ``timeout``), so a broker that accepts and then says
nothing costs only its own timeout. The outcome is one immutable ``ProbeResult``.

Around that core: ``wss://`` brokers get the WebSocket upgrade between TLS and MQTT (the CONNACK then
travels in frames, see ``transport``); ``proxy_url`` tunnels the TCP connect; ``mqtt.roundtrip`` adds
a publish/receive round trip; ``addresses: all`` probes every address of the name concurrently, under
the same deadline, one result each (``probe_group``).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from exporter.config import BrokerConfig, ProxySettings
from exporter.probe import chain as chains
from exporter.probe import files
from exporter.probe.addresses import family_name, literal_ip, select_addresses
from exporter.probe.aia import AiaFetcher
from exporter.probe.connection import Connection, connect
from exporter.probe.crl import CrlFetcher
from exporter.probe.lifecycle import Lifecycle
from exporter.probe.mqtt import (
    DISCONNECT,
    PROTOCOL_5,
    PROTOCOL_AUTO,
    UNSUPPORTED_VERSION_CODES,
    Connack,
    PacketError,
    connack_meaning,
    encode_connect,
    read_connack,
)
from exporter.probe.negotiation import LEARN_TIMEOUT, ProtocolMemory, Where, spoken
from exporter.probe.proxy import ProxyError, ProxyFailure, dialogue, tunnel
from exporter.probe.roundtrip import run_roundtrip
from exporter.probe.tls import (
    ClientCertificateRequired,
    TlsCertificateTooLarge,
    TlsClosed,
    TlsHandshakeFailure,
    TlsProtocolError,
    TlsSession,
    client_context,
)
from exporter.probe.transport import Stream, WebSocketStream
from exporter.probe.websocket import UpgradeRejected, WebSocketProtocolError
from exporter.results import (
    Failure,
    MqttFacts,
    Phase,
    ProbeResult,
    Reason,
    RoundtripFacts,
    Stage,
    TlsFacts,
    TrustVerdict,
    WebSocketFacts,
)

log = logging.getLogger(__name__)

#: Under TLS 1.3 a server's verdict on our client certificate follows the handshake: wait this long
#: for it (only when the server asked for a certificate).
CLIENT_CERT_VERDICT_WAIT = 0.5
#: Phases in declaration order, for sorting a probe's durations (not ``list(Phase).index``: per probe).
_PHASE_ORDER = {phase: index for index, phase in enumerate(Phase)}
#: Spend at most this share of what is left of the deadline fetching a missing intermediate.
AIA_TIMEOUT = 3.0

#: Resolves a host name to its addresses (IP strings); ``getaddrinfo`` unless a test injects another.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def getaddrinfo_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _Failed(Exception):
    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.detail)
        self.failure = failure


@dataclass
class _Clock:
    deadline: float
    durations: list[tuple[Phase, float]] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def fork(self) -> _Clock:
        """The same deadline and the phases so far, for one of several concurrent probes."""
        return _Clock(self.deadline, list(self.durations), self.started)

    @contextmanager
    def phase(self, phase: Phase) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.durations.append((phase, time.monotonic() - start))

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())


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

    async def probe(self, broker: BrokerConfig) -> ProbeResult:
        """One probe at one address: the first of the name, as ``ip_protocol`` orders them."""
        return await self._probe(broker, _Clock(time.monotonic() + broker.timeout), _State(), time.time())

    async def probe_group(self, broker: BrokerConfig) -> tuple[ProbeResult, ...]:
        """What the scheduler runs: ``probe`` for most brokers; with ``addresses: all`` every address of
        the name, concurrently under the one deadline, each result labelled with its address.

        A name that does not resolve gives one unlabelled result (``resolve``/``dns_error``).
        """
        if broker.addresses != "all":
            return (await self.probe(broker),)
        started = time.time()
        clock = _Clock(time.monotonic() + broker.timeout)
        try:
            with clock.phase(Phase.RESOLVE):
                ips = await self._resolve(broker, clock)
        except _Failed as failed:
            return (await self._probe(broker, clock, _State(), started, failure=failed.failure),)
        probes = [self._probe(broker, clock.fork(), _State(ip=ip, address_label=ip), started) for ip in ips]
        return tuple(await asyncio.gather(*probes))

    async def _probe(
        self,
        broker: BrokerConfig,
        clock: _Clock,
        state: _State,
        started: float,
        *,
        failure: Failure | None = None,
    ) -> ProbeResult:
        if failure is None:
            try:
                failure = await self._run(broker, clock, state)
            except _Failed as failed:
                failure = failed.failure
        if broker.mqtt.protocol == PROTOCOL_AUTO and _may_be_the_version(failure or state.secondary_failure):
            self.protocols.forget(_where(broker, state))  # learn it again next time
        clock.durations.append((Phase.TOTAL, time.monotonic() - clock.started))
        around = await self.lifecycle.around(
            broker,
            ip=state.ip,
            tls=state.tls,
            presented=state.presented,
            failure=failure,
            deadline=clock.deadline,
        )
        return ProbeResult(
            broker=broker.name,
            address=broker.address,
            ip=state.ip,
            started=started,
            finished=time.time(),
            durations=tuple(sorted(clock.durations, key=lambda item: _PHASE_ORDER[item[0]])),
            failure=failure,
            tls=state.tls,
            mqtt=state.mqtt,
            secondary_failure=state.secondary_failure,
            address_label=state.address_label,
            websocket=state.websocket,
            roundtrip=state.roundtrip,
            served_file=around.served_file,
            client_cert=around.client_cert,
            revocation=around.revocation,
            legacy_tls=around.legacy_tls,
            lints=around.lints,
        )

    async def _run(self, broker: BrokerConfig, clock: _Clock, state: _State) -> Failure | None:
        if not state.ip and not _proxy_resolves(broker):
            with clock.phase(Phase.RESOLVE):
                state.ip = (await self._resolve(broker, clock))[0]
        with clock.phase(Phase.CONNECT):
            connection = await _connect(
                state.ip or broker.target.host, broker.target.port, clock, broker.proxy
            )
        session = _session(connection, broker, verify=True)
        try:
            with clock.phase(Phase.TLS):
                verified = await self._handshake(session, broker, clock, state)
            if not verified:
                session.close()
                await self._mqtt_over_unverified(await self._negotiated(broker, clock, state), clock, state)
                assert state.tls is not None
                problems = ", ".join(state.tls.verdict.problems)
                return Failure(Stage.TRUST, Reason.UNTRUSTED, f"certificate chain not trusted: {problems}")
            broker = await self._negotiated(broker, clock, state)
            stream = await _open_stream(session, broker, clock, state)
            with clock.phase(Phase.MQTT):
                state.mqtt = await _exchange(stream, broker, clock)
        finally:
            session.close()
        return _refusal(state.mqtt) or await _roundtrip(broker, clock, state, verified=True)

    async def _negotiated(self, broker: BrokerConfig, clock: _Clock, state: _State) -> BrokerConfig:
        """The broker with ``mqtt.protocol: auto`` replaced by the version it speaks (remembered, or
        learned now on a connection of its own with a CONNECT that carries no credentials)."""
        if broker.mqtt.protocol != PROTOCOL_AUTO:
            return broker
        where = _where(broker, state)
        protocol = self.protocols.get(where)
        if protocol is None:
            answer, definite = await _ask_version(broker, clock.fork(), state.ip)
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
        except TimeoutError:
            raise _Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"resolving {host} timed out")) from None
        except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError
            raise _Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"cannot resolve {host}: {exc}")) from None
        addresses = select_addresses(candidates, broker.ip_protocol)
        if not addresses:
            family = family_name(broker.ip_protocol)
            raise _Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"{host} has no {family} address"))
        return addresses

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
        except TlsCertificateTooLarge as exc:
            raise _Failed(Failure(Stage.TLS, Reason.CERTIFICATE_TOO_LARGE, str(exc))) from None
        except TlsProtocolError as exc:
            raise _Failed(Failure(Stage.TLS, Reason.PROTOCOL_ERROR, str(exc))) from None
        except TlsHandshakeFailure as exc:
            raise _Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, str(exc))) from None
        except ClientCertificateRequired as exc:
            raise _Failed(Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))) from None
        except OSError as exc:
            raise _Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, f"TLS handshake: {exc}")) from None
        presented = tuple(chains.parse_der(der) for der in session.chain_der)
        verdict = await self._verdict(session.chain_der, presented, broker, clock, verify)
        state.tls = TlsFacts(
            version=session.version if verify is None else "",
            cipher=session.cipher if verify is None else "",
            chain=tuple(parsed.facts for parsed in presented),
            verdict=verdict,
            alpn_protocol=session.alpn_protocol if verify is None else "",
        )
        state.presented = presented
        if verify is not None:
            return False
        try:
            await session.await_client_certificate_verdict(min(CLIENT_CERT_VERDICT_WAIT, clock.remaining()))
        except ClientCertificateRequired as exc:
            raise _Failed(Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))) from None
        return True

    async def _verdict(
        self,
        chain_der: tuple[bytes, ...],
        presented: tuple[chains.Parsed, ...],
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

    async def _mqtt_over_unverified(self, broker: BrokerConfig, clock: _Clock, state: _State) -> None:
        """The chain is untrusted; does the broker still answer MQTT? (broker down vs certificate bad)"""
        try:
            connection = await _connect(
                state.ip or broker.target.host, broker.target.port, clock, broker.proxy
            )
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
                stream = await _open_stream(session, broker, clock, state)
                with clock.phase(Phase.MQTT):
                    state.mqtt = await _exchange(stream, broker, clock, unverified=True)
            finally:
                session.close()
            state.secondary_failure = _refusal(state.mqtt)
        except _Failed as failed:
            state.secondary_failure = failed.failure
        if state.secondary_failure is None:
            # ACL or routing problems are worth knowing even while the certificate is bad.
            await _roundtrip(broker, clock, state, verified=False)


@dataclass
class _State:
    ip: str = ""
    tls: TlsFacts | None = None
    mqtt: MqttFacts | None = None
    secondary_failure: Failure | None = None
    address_label: str = ""
    websocket: WebSocketFacts | None = None
    roundtrip: RoundtripFacts | None = None
    #: the chain as sent, parsed, for what runs after the probe (revocation)
    presented: tuple[chains.Parsed, ...] = ()


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
    if code == UNSUPPORTED_VERSION_CODES.get(mqtt.protocol):
        detail = (
            f"the broker does not speak MQTT {mqtt.requested or mqtt.protocol}: CONNACK {code} ({meaning})"
        )
        return Failure(Stage.MQTT, Reason.UNSUPPORTED_PROTOCOL, detail)
    return Failure(Stage.MQTT, Reason.REFUSED, f"CONNACK refused the connection: {code} ({meaning})")


def _where(broker: BrokerConfig, state: _State) -> Where:
    target = broker.target
    return Where(broker.name, state.ip or target.host, target.port, target.scheme, target.path)


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
                stream = await _open_stream(session, broker, clock, _State(ip=ip))
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
    except _ANSWERLESS:
        return None, sent


def _proxy_resolves(broker: BrokerConfig) -> bool:
    """Whether the proxy, not we, resolves the broker's name (socks5h://, http:// CONNECT)."""
    if broker.proxy is None or not broker.proxy.resolves_names:
        return False
    return literal_ip(broker.target.host) is None


async def _connect(host: str, port: int, clock: _Clock, proxy: ProxySettings | None = None) -> Connection:
    """TCP to ``host`` (an IP, or a name the proxy resolves), directly or through ``proxy``."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    hop = where if proxy is None else f"proxy {proxy}"
    try:
        async with asyncio.timeout(clock.remaining()):
            connection = await connect(host, port) if proxy is None else await connect(proxy.host, proxy.port)
    except TimeoutError:
        raise _Failed(Failure(Stage.CONNECT, Reason.TIMEOUT, f"TCP connect to {hop} timed out")) from None
    except socket.gaierror as exc:  # only a proxy is reached by name here
        raise _Failed(Failure(Stage.CONNECT, Reason.PROXY_ERROR, f"cannot resolve {hop}: {exc}")) from None
    except ConnectionRefusedError:
        raise _Failed(Failure(Stage.CONNECT, Reason.REFUSED, f"connection to {hop} refused")) from None
    except ConnectionResetError:
        raise _Failed(Failure(Stage.CONNECT, Reason.RESET, f"connection to {hop} reset")) from None
    except OSError as exc:
        reason = Reason.TIMEOUT if exc.errno == errno.ETIMEDOUT else Reason.UNREACHABLE
        raise _Failed(
            Failure(Stage.CONNECT, reason, f"cannot connect to {hop}: {exc.strerror or exc}")
        ) from None
    if proxy is not None:
        await _tunnel(connection, proxy, host, port, clock)
    return connection


_PROXY_REASONS = {
    ProxyFailure.REFUSED: Reason.REFUSED,
    ProxyFailure.UNREACHABLE: Reason.UNREACHABLE,
    ProxyFailure.TIMEOUT: Reason.TIMEOUT,
    ProxyFailure.PROXY_ERROR: Reason.PROXY_ERROR,
}


async def _tunnel(connection: Connection, proxy: ProxySettings, host: str, port: int, clock: _Clock) -> None:
    """Ask the proxy for a tunnel to host:port (SOCKS5 or HTTP CONNECT)."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    failure: Failure | None = None
    try:
        async with asyncio.timeout(clock.remaining()):
            await tunnel(connection, dialogue(proxy, host, port))
    except TimeoutError:
        failure = Failure(
            Stage.CONNECT, Reason.TIMEOUT, f"proxy {proxy} did not open a tunnel to {where} in time"
        )
    except ProxyError as exc:
        failure = Failure(Stage.CONNECT, _PROXY_REASONS[exc.kind], f"proxy {proxy} -> {where}: {exc}")
    except OSError as exc:
        failure = Failure(Stage.CONNECT, Reason.PROXY_ERROR, f"proxy {proxy} -> {where}: {exc}")
    if failure is not None:
        connection.close()
        raise _Failed(failure)


async def _open_stream(session: TlsSession, broker: BrokerConfig, clock: _Clock, state: _State) -> Stream:
    """mqtts: MQTT goes straight over TLS. wss: the HTTP upgrade first, then MQTT in binary frames."""
    if broker.target.scheme != "wss":
        return session
    stream = WebSocketStream(session)
    failure: Failure | None = None
    with clock.phase(Phase.WEBSOCKET):
        try:
            async with asyncio.timeout(clock.remaining()):
                await stream.upgrade(
                    host=broker.server_name.strip("[]"), port=broker.target.port, path=broker.target.path
                )
        except TimeoutError:
            failure = Failure(
                Stage.WEBSOCKET, Reason.TIMEOUT, "no answer to the WebSocket upgrade before the deadline"
            )
        except UpgradeRejected as exc:
            failure = Failure(Stage.WEBSOCKET, Reason.UPGRADE_REJECTED, f"{exc} (path {broker.target.path})")
        except WebSocketProtocolError as exc:
            failure = Failure(Stage.WEBSOCKET, Reason.PROTOCOL_ERROR, f"WebSocket upgrade: {exc}")
        except ClientCertificateRequired as exc:
            failure = Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))
        except (EOFError, TlsClosed, OSError) as exc:
            failure = Failure(
                Stage.WEBSOCKET, Reason.CLOSED, f"connection closed during the WebSocket upgrade: {exc}"
            )
    if stream.response is not None:
        state.websocket = WebSocketFacts(stream.response.status, stream.subprotocol)
    if failure is not None:
        raise _Failed(failure)
    return stream


async def _roundtrip(broker: BrokerConfig, clock: _Clock, state: _State, *, verified: bool) -> Failure | None:
    """The optional publish/receive round trip, on a connection of its own (aiomqtt)."""
    if broker.mqtt.roundtrip is None or state.mqtt is None or not state.mqtt.accepted:
        return None
    with clock.phase(Phase.ROUNDTRIP):
        state.roundtrip = await run_roundtrip(
            broker,
            ip=state.ip or None,
            context=client_context(broker.tls, verify=verified),
            budget=clock.remaining(),
            unverified=not verified,
        )
    return state.roundtrip.failure


def _session(connection: Connection, broker: BrokerConfig, *, verify: bool) -> TlsSession:
    server_name = broker.server_name.strip("[]")
    try:
        context = client_context(broker.tls, verify=verify)
    except (ssl.SSLError, OSError, ValueError) as exc:
        # The files were usable when the config was loaded; they changed since.
        connection.close()
        detail = f"cannot load the configured CA or client certificate files: {exc}"
        raise _Failed(Failure(Stage.TLS, Reason.HANDSHAKE_FAILURE, detail)) from None
    return TlsSession(
        connection,
        context,
        server_name,
        sends_client_certificate=bool(broker.tls.cert_file),
    )


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
    except TimeoutError:
        raise _Failed(Failure(Stage.MQTT, Reason.TIMEOUT, "no CONNACK before the deadline")) from None
    except PacketError as exc:
        raise _Failed(Failure(Stage.MQTT, Reason.PROTOCOL_ERROR, f"invalid CONNACK: {exc}")) from None
    except ClientCertificateRequired as exc:
        raise _Failed(Failure(Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, str(exc))) from None
    except WebSocketProtocolError as exc:
        raise _Failed(Failure(Stage.WEBSOCKET, Reason.PROTOCOL_ERROR, f"WebSocket frames: {exc}")) from None
    except (EOFError, TlsClosed, OSError) as exc:
        if isinstance(stream, WebSocketStream) and stream.close_status is not None:
            raise _Failed(_websocket_closed(*stream.close_status)) from None
        raise _Failed(
            Failure(Stage.MQTT, Reason.CLOSED, str(exc) or "connection closed before CONNACK")
        ) from None
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


def _websocket_closed(code: int | None, reason: str) -> Failure:
    status = "no status code" if code is None else f"status {code}"
    why = f', reason "{reason}"' if reason else ", no reason given"
    detail = f"the broker closed the WebSocket instead of answering CONNECT ({status}{why})"
    return Failure(Stage.MQTT, Reason.WEBSOCKET_CLOSED, detail)


def _client_id(broker: BrokerConfig) -> str:
    return broker.mqtt.client_id or f"mqtt-cert-exporter-{uuid.uuid4().hex[:12]}"


#: How a learning exchange ends without a CONNACK (a broker that cannot parse v5 closes or misbehaves)
_ANSWERLESS: tuple[type[Exception], ...] = (
    _Failed,
    EOFError,
    PacketError,
    ssl.SSLError,
    OSError,
    TlsClosed,
    TlsProtocolError,
    TlsHandshakeFailure,
    ClientCertificateRequired,
    UpgradeRejected,
    WebSocketProtocolError,
)
