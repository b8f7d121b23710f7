"""One probe of one broker: resolve, connect, TLS (verdict + chain), CONNECT/CONNACK, DISCONNECT.

Every phase shares one deadline (the broker's ``timeout``), so a broker that accepts and then says
nothing costs only its own timeout. The outcome is one immutable ``ProbeResult``: the phases add their
facts to the probe's own ``Draft``, the checks around the chain (``Lifecycle.complete``) add theirs, and
the draft is frozen once at the end.

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
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import replace

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.certs import chain as chains
from mqtt_cert_exporter.certs import files
from mqtt_cert_exporter.certs.parse import (
    Parsed,
    TrustStore,
    issuer_cache_size,
    parse_der,
    parsed_cache_size,
)
from mqtt_cert_exporter.config import BrokerConfig, MqttProtocol
from mqtt_cert_exporter.connack import (
    PROTOCOL_5,
    PROTOCOL_AUTO,
)
from mqtt_cert_exporter.probe import steps
from mqtt_cert_exporter.probe.draft import Draft
from mqtt_cert_exporter.probe.failures import (
    RESOLVE,
    TLS_HANDSHAKE,
)
from mqtt_cert_exporter.probe.judgements import Judgement, Judgements, chain_digest
from mqtt_cert_exporter.probe.lifecycle import Lifecycle
from mqtt_cert_exporter.probe.lifecycle.aia import AiaFetcher
from mqtt_cert_exporter.probe.lifecycle.crl import CrlFetcher
from mqtt_cert_exporter.probe.negotiation import ProtocolMemory, Where, spoken
from mqtt_cert_exporter.probe.secondlook import second_look
from mqtt_cert_exporter.probe.steps import Admit, Clock, Failed
from mqtt_cert_exporter.probe.wire.addresses import family_name, literal_ip, select_addresses
from mqtt_cert_exporter.probe.wire.connection import Connection
from mqtt_cert_exporter.probe.wire.tls import TlsSession
from mqtt_cert_exporter.probe.wire.transport import Stream
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
)

log = logs.get_logger(__name__)

#: Spend at most this share of what is left of the deadline fetching a missing intermediate.
AIA_TIMEOUT = 3.0

#: Resolves a host name to its addresses (IP strings); ``getaddrinfo`` unless a test injects another.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
#: The chain as sent, parsed: for what runs after the probe (revocation), never part of the result.
Presented = tuple[Parsed, ...]


async def getaddrinfo_resolver(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class _SpeaksOlder(Exception):
    """This probe's own v5 CONNECT showed that the broker speaks 3.1.1: probe it again in 3.1.1."""


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
        #: listener -> what OpenSSL said of the chain it served last
        self.judgements = Judgements()
        #: ``mqtt.protocol: auto``: the version each broker speaks, learned without credentials
        self.protocols = ProtocolMemory()
        self.resolver: Resolver = resolver or getaddrinfo_resolver
        #: around the chain (served file, client certificate, CRLs, legacy TLS, lints); never fails a probe
        self.lifecycle = Lifecycle(crl or CrlFetcher(), legacy_tls_interval)

    def configure(self, brokers: Iterable[BrokerConfig]) -> None:
        """The scheduled brokers now: what is remembered about them is kept while they are configured."""
        self.protocols.configure(broker.name for broker in brokers)

    def cache_sizes(self) -> tuple[CacheSize, ...]:
        """The caches brokers can grow (by the URLs their certificates name), for the exporter's metrics."""
        return (
            self.lifecycle.crl.size(),
            self.aia.size(),
            parsed_cache_size(),
            issuer_cache_size(),
            chains.signature_cache_size(),
            self.verdicts.size(),
            self.judgements.size(),
        )

    async def probe(self, broker: BrokerConfig, admit: Admit | None = None) -> ProbeResult:
        """One probe at one address: the first of the name, as ``ip_protocol`` orders them."""
        clock = Clock(time.monotonic() + broker.timeout, admit=admit)
        started = time.time()
        return await self._probe(broker, clock, lambda: Draft.of(broker, started))

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
        clock = Clock(time.monotonic() + broker.timeout, admit=admit)
        try:
            with clock.phase(Phase.RESOLVE):
                ips = await self._resolve(broker, clock)
        except Failed as failed:
            draft = Draft.of(broker, started)
            draft.failure = failed.failure
            return (await self._complete(broker, clock, draft),)
        probes = [self._probe(broker, clock.fork(), _draft_at(broker, started, ip)) for ip in ips]
        return tuple(await asyncio.gather(*probes))

    async def _probe(self, broker: BrokerConfig, clock: Clock, start: Callable[[], Draft]) -> ProbeResult:
        draft = start()
        try:
            presented = await self._run(broker, clock, draft)
        except _SpeaksOlder:
            clock.durations.clear()  # the phases of the probe that counts, the one in 3.1.1
            draft = start()
            presented = await self._run(steps.speaking(broker, "3.1.1"), clock, draft)
        if broker.mqtt.protocol == PROTOCOL_AUTO and _may_be_the_version(
            draft.failure or draft.secondary_failure
        ):
            self.protocols.forget(_where(broker, draft))  # learn it again next time
        return await self._complete(broker, clock, draft, presented)

    async def _complete(
        self, broker: BrokerConfig, clock: Clock, draft: Draft, presented: Presented = ()
    ) -> ProbeResult:
        clock.durations.append((Phase.TOTAL, time.monotonic() - clock.started))
        around = await self.lifecycle.complete(broker, draft, presented, deadline=clock.deadline)
        return draft.freeze(clock.sorted_durations(), around)

    async def _run(self, broker: BrokerConfig, clock: Clock, draft: Draft) -> Presented:
        """The probe proper: every fact the phases found goes into ``draft``, with the failure that ended
        it; returns the chain as presented."""
        presented: Presented = ()
        try:
            if not draft.ip and not steps.proxy_resolves(broker):
                with clock.phase(Phase.RESOLVE):
                    draft.ip = (await self._resolve(broker, clock))[0]
            where = _where(broker, draft)
            session, presented = await self._tls(broker, clock, draft, where)
            try:
                protocol, learn_at = await self._negotiated(broker, clock, draft, where)
                if draft.failure is not None:  # the chain is untrusted: does the broker answer MQTT?
                    if session.handshake_done:  # on a session that verified nothing
                        await self._mqtt_unverified(session, broker, protocol, clock, draft, learn_at)
                    else:  # OpenSSL ended the handshake
                        session.close()
                        await self._mqtt_over_unverified(broker, protocol, clock, draft, learn_at)
                    return presented
                stream = await steps.open_stream(session, broker, clock, draft)
                with clock.phase(Phase.MQTT):
                    draft.mqtt = await self._mqtt_exchange(stream, broker, protocol, learn_at)
            finally:
                session.close()
            draft.failure = steps.refusal(draft.mqtt)
            if draft.failure is None:
                await steps.round_trip(broker, protocol, clock, draft, verified=True)
                draft.failure = draft.roundtrip.failure if draft.roundtrip else None
        except Failed as failed:
            draft.failure = failed.failure
            await second_look(broker, draft, clock.remaining())
        return presented

    async def _tls(
        self, broker: BrokerConfig, clock: Clock, draft: Draft, where: Where
    ) -> tuple[TlsSession, Presented]:
        """TCP, then the TLS session and the chain as presented; the draft gains the TLS facts, and the
        ``untrusted`` failure when OpenSSL rejected the chain. A chain OpenSSL judged before is judged
        again only when it changed (``judgements``)."""
        connection = await _connected(broker, clock, draft)
        store = files.trust_store(broker.tls.ca_file)
        judged = self.judgements.recall(where, broker.server_name, store)
        if judged is not None:
            known = await self._as_judged_before(connection, broker, clock, draft, where, judged)
            if known is not None:
                return known
            connection = await _connected(broker, clock, draft)  # another chain: OpenSSL judges it
        session = steps.open_session(connection, broker, verify=True)
        try:
            with clock.phase(Phase.TLS):
                presented, verified = await self._handshake(session, broker, store, clock, draft)
                self._remember(broker, store, where, session, presented)
                if verified:
                    await steps.client_certificate_verdict(session, clock)
        except BaseException:
            session.close()
            raise
        if not verified:
            assert draft.tls is not None
            draft.failure = _untrusted(draft.tls.verdict)
        return session, presented

    async def _negotiated(
        self, broker: BrokerConfig, clock: Clock, draft: Draft, where: Where
    ) -> tuple[MqttProtocol, Where | None]:
        """The version to speak: the configured one, or with ``mqtt.protocol: auto`` the one the broker
        speaks, remembered or learned now. A CONNECT without credentials teaches it on the probe's own
        connection (the version is then where to learn it, the second value); one with credentials never
        goes to a broker that may not parse it: a credential-less CONNECT on a connection of its own
        asks first."""
        if broker.mqtt.protocol != PROTOCOL_AUTO:
            return broker.mqtt.protocol, None
        protocol = self.protocols.get(where)
        if protocol is None and not steps.sends_credentials(broker):
            return "5", where
        if protocol is None:
            answer, definite = await steps.ask_version(broker, clock.fork(), draft.ip)
            protocol = spoken(answer)
            if definite:
                self.protocols.learn(where, protocol)
        return protocol, None

    async def _mqtt_exchange(
        self,
        stream: Stream,
        broker: BrokerConfig,
        protocol: MqttProtocol,
        learn_at: Where | None,
        *,
        unverified: bool = False,
    ) -> MqttFacts:
        """CONNECT/CONNACK; with ``learn_at`` the v5 CONNECT also teaches the version (``spoken``).
        ``_SpeaksOlder`` when it is 3.1.1: a CONNACK cannot be taken back. A broker silent until the
        deadline times out as with a known version (no broker is known to stay silent on a v5 CONNECT
        without credentials; they answer or close)."""
        if learn_at is None:
            return await steps.exchange(stream, broker, protocol, unverified=unverified)
        try:
            connack = await steps.connack(stream, broker, protocol)
        except Failed as failed:
            if failed.failure.reason is Reason.TIMEOUT:
                raise
            self.protocols.learn(learn_at, spoken(None))  # a broker that cannot parse v5 closes or garbles
            raise _SpeaksOlder from None
        learned = spoken(connack)
        self.protocols.learn(learn_at, learned)
        if learned != PROTOCOL_5:
            raise _SpeaksOlder
        return await steps.after_connack(stream, protocol, connack, unverified=unverified)

    async def _resolve(self, broker: BrokerConfig, clock: Clock) -> list[str]:
        """The addresses to probe, best first (see ``select_addresses``); never empty."""
        host = broker.target.host
        literal = literal_ip(host)
        if literal is not None:
            return [literal]
        try:
            async with asyncio.timeout(clock.remaining()):
                candidates = await self.resolver(host, broker.target.port)
        except RESOLVE.catches as exc:
            raise Failed(RESOLVE.failure(exc, host)) from None
        addresses = select_addresses(candidates, broker.ip_protocol)
        if not addresses:
            family = family_name(broker.ip_protocol)
            raise Failed(Failure(Stage.RESOLVE, Reason.DNS_ERROR, f"{host} has no {family} address"))
        return addresses

    async def _handshake(
        self, session: TlsSession, broker: BrokerConfig, store: TrustStore, clock: Clock, draft: Draft
    ) -> tuple[Presented, bool]:
        """The chain as presented, and whether it verified; the draft gains the TLS facts (with the
        verdict that says why not)."""
        verify: tuple[int, str] | None = None
        try:
            await session.handshake()  # bounded by the connection's deadline (``steps.connect_tcp``)
        except ssl.SSLCertVerificationError:  # first: the table catches it too (an OSError)
            assert session.verify_error is not None
            verify = (session.verify_error.code, session.verify_error.message)
        except TLS_HANDSHAKE.catches as exc:
            raise Failed(TLS_HANDSHAKE.failure(exc)) from None
        presented = tuple(parse_der(der) for der in session.chain_der)
        verdict = await self._verdict(presented, broker, store, clock, verify)
        # a handshake OpenSSL ended cannot tell version and cipher
        draft.tls = _tls_facts(session, presented, verdict, negotiated=verify is None)
        return presented, verify is None

    async def _verdict(
        self,
        presented: Presented,
        broker: BrokerConfig,
        store: TrustStore,
        clock: Clock,
        verify: tuple[int, str] | None,
    ) -> TrustVerdict:
        """The verdict on the chain against ``store`` (the broker's trust store, looked up once per probe):
        remembered from an earlier probe while nothing it depends on changed."""
        configured = (
            files.certificates_in(broker.tls.intermediates_file) if broker.tls.intermediates_file else ()
        )
        # the DER as the parsed-certificate cache holds it: a fleet's shared intermediate is kept once
        key = (tuple(parsed.der for parsed in presented), verify, broker.server_name, store, configured)
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
        self,
        broker: BrokerConfig,
        protocol: MqttProtocol,
        clock: Clock,
        draft: Draft,
        learn_at: Where | None,
    ) -> None:
        """The chain is untrusted (the probe's failure); does the broker still answer MQTT? (broker down
        vs certificate bad). The failures of this second connection go to ``secondary_failure``, mapped
        by the same tables."""
        assert draft.tls is not None  # the verdict on the chain is why this connection is made
        try:
            connection = await steps.connect_tcp(
                draft.ip or broker.target.host, broker.target.port, clock, broker.proxy
            )
            session = steps.open_session(connection, broker, verify=False)
            try:
                await steps.unverified_handshake(session)
                # The failed verifying handshake cannot tell version and cipher; this one can.
                draft.tls = replace(
                    draft.tls,
                    version=session.version,
                    cipher=session.cipher,
                    alpn_protocol=session.alpn_protocol,
                )
                await self._mqtt_unverified(session, broker, protocol, clock, draft, learn_at)
            finally:
                session.close()
        except Failed as failed:
            draft.secondary_failure = failed.failure

    async def _mqtt_unverified(
        self,
        session: TlsSession,
        broker: BrokerConfig,
        protocol: MqttProtocol,
        clock: Clock,
        draft: Draft,
        learn_at: Where | None,
    ) -> None:
        """MQTT over a session that verified nothing: its failures are ``secondary_failure``."""
        try:
            stream = await steps.open_stream(session, broker, clock, draft)
            with clock.phase(Phase.MQTT):
                draft.mqtt = await self._mqtt_exchange(stream, broker, protocol, learn_at, unverified=True)
        except Failed as failed:
            draft.secondary_failure = failed.failure
            return
        draft.secondary_failure = steps.refusal(draft.mqtt)
        if draft.secondary_failure is None:
            # ACL or routing problems are worth knowing even while the certificate is bad.
            await steps.round_trip(broker, protocol, clock, draft, verified=False)

    # -- a chain OpenSSL judged before ------------------------------------------------------------
    def _remember(
        self, broker: BrokerConfig, store: TrustStore, where: Where, session: TlsSession, presented: Presented
    ) -> None:
        """What OpenSSL said of the chain of this verifying handshake against ``store``, for the listener's
        next probe."""
        error = session.verify_error
        judged = Judgement(
            broker.server_name,
            store,
            None if error is None else (error.code, error.message),
            chain_digest(session.chain_der),
        )
        self.judgements.remember(where, judged, [parsed.facts for parsed in presented])

    async def _as_judged_before(
        self,
        connection: Connection,
        broker: BrokerConfig,
        clock: Clock,
        draft: Draft,
        where: Where,
        judged: Judgement,
    ) -> tuple[TlsSession, Presented] | None:
        """The TLS session of a listener whose chain OpenSSL judged before, on a context that does not
        judge it again (``judgements``): the session, or None (its connection closed) when the broker
        now sends a chain other than the one judged."""
        session = steps.open_session(connection, broker, verify=False, known_chain=judged.accepted)
        try:
            with clock.phase(Phase.TLS):
                await steps.unverified_handshake(session)
                if chain_digest(session.chain_der) != judged.chain:
                    self.judgements.forget(where)
                    session.close()
                    return None
                presented = tuple(parse_der(der) for der in session.chain_der)
                # recall() gave this judgement for the trust store of this probe: judged.store is it
                verdict = await self._verdict(presented, broker, judged.store, clock, judged.verify)
                draft.tls = _tls_facts(session, presented, verdict, negotiated=True)
                if judged.accepted:
                    await steps.client_certificate_verdict(session, clock)
                else:
                    draft.failure = _untrusted(verdict)
        except BaseException:
            session.close()
            raise
        return session, presented


def _tls_facts(
    session: TlsSession, presented: Presented, verdict: TrustVerdict, *, negotiated: bool
) -> TlsFacts:
    """The TLS facts of a handshake; version, cipher and ALPN only when it was ``negotiated``."""
    return TlsFacts(
        version=session.version if negotiated else "",
        cipher=session.cipher if negotiated else "",
        chain=tuple(parsed.facts for parsed in presented),
        verdict=verdict,
        alpn_protocol=session.alpn_protocol if negotiated else "",
    )


def _untrusted(verdict: TrustVerdict) -> Failure:
    return Failure(
        Stage.TRUST, Reason.UNTRUSTED, f"certificate chain not trusted: {', '.join(verdict.problems)}"
    )


async def _connected(broker: BrokerConfig, clock: Clock, draft: Draft) -> Connection:
    """TCP to the broker, then the scheduler's slot (a connect that never completes never holds one)."""
    with clock.phase(Phase.CONNECT):
        connection = await steps.connect_tcp(
            draft.ip or broker.target.host, broker.target.port, clock, broker.proxy, bind=False
        )
    try:
        await clock.admitted()
    except BaseException:
        connection.close()
        raise
    connection.expire_at(clock.deadline)  # the wait for the slot moved the deadline
    return connection


def _draft_at(broker: BrokerConfig, started: float, ip: str) -> Callable[[], Draft]:
    """A blank draft for the probe of one of the name's addresses (``addresses: all``)."""
    return lambda: Draft.of(broker, started, ip=ip, address_label=ip)


def _where(broker: BrokerConfig, draft: Draft) -> Where:
    target = broker.target
    return Where(broker.name, draft.ip or target.host, target.port, target.scheme, target.path)


def _may_be_the_version(failure: Failure | None) -> bool:
    """Whether a failure may come from speaking the wrong MQTT version (then it is learned again)."""
    return failure is not None and failure.stage == Stage.MQTT and failure.reason != Reason.REFUSED
