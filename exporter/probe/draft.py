"""A probe's facts while it runs: each phase adds what it found, and ``freeze`` makes the one
``ProbeResult`` at the end.

A draft belongs to the one probe that made it and nothing else sees it before it is frozen, so the
result stays immutable where it flows (store, exposition, status page). Building it once, instead of a
new frozen copy per phase (``dataclasses.replace``, ~8 us each), is a measurable share of a probe's CPU.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.results import (
    CertFacts,
    Failure,
    LegacyTlsFacts,
    LintFinding,
    MqttFacts,
    Phase,
    ProbeResult,
    RevocationFacts,
    RoundtripFacts,
    ServedFileFacts,
    TlsFacts,
    WebSocketFacts,
)


@dataclass(frozen=True, slots=True)
class Around:
    """What the checks around the chain found (``lifecycle``): never part of ``probe_success``."""

    served_file: ServedFileFacts | None = None
    client_cert: CertFacts | None = None
    revocation: RevocationFacts | None = None
    legacy_tls: LegacyTlsFacts | None = None
    lints: tuple[LintFinding, ...] = ()


@dataclass(slots=True)
class Draft:
    """The probe proper's facts so far, named as in ``ProbeResult``."""

    broker: str
    address: str
    ip: str
    started: float
    address_label: str = ""
    failure: Failure | None = None
    secondary_failure: Failure | None = None
    tls: TlsFacts | None = None
    mqtt: MqttFacts | None = None
    websocket: WebSocketFacts | None = None
    roundtrip: RoundtripFacts | None = None

    @classmethod
    def of(cls, broker: BrokerConfig, started: float, *, ip: str = "", address_label: str = "") -> Draft:
        """A draft before any phase ran."""
        return cls(broker.name, broker.address, ip, started, address_label)

    def freeze(self, durations: tuple[tuple[Phase, float], ...], around: Around) -> ProbeResult:
        """The result, finished now."""
        return ProbeResult(
            broker=self.broker,
            address=self.address,
            ip=self.ip,
            started=self.started,
            finished=time.time(),
            durations=durations,
            failure=self.failure,
            tls=self.tls,
            mqtt=self.mqtt,
            secondary_failure=self.secondary_failure,
            address_label=self.address_label,
            websocket=self.websocket,
            roundtrip=self.roundtrip,
            served_file=around.served_file,
            client_cert=around.client_cert,
            revocation=around.revocation,
            legacy_tls=around.legacy_tls,
            lints=around.lints,
        )
