"""``mqtt.protocol: auto``: which MQTT version a broker speaks, learned without sending credentials.

A broker that cannot parse a CONNECT may log it raw (RabbitMQ 3.10 logs a v5 CONNECT byte by byte at
error level, username and password readable) or never answer (amqtt 0.12 with credentials). So the
version is learned with a CONNECT that carries no credentials, once per broker: the probe's own CONNECT
when it carries none (then a broker that speaks only 3.1.1 is probed again in 3.1.1), else one on a
connection of its own. It is remembered until a probe of that broker fails in the MQTT stage, then
learned again.

This module is the pure part: what an answer says, and the bounded memory. The probe does the I/O.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from mqtt_cert_exporter.config.model import MqttProtocol
from mqtt_cert_exporter.connack import PROTOCOL_311
from mqtt_cert_exporter.probe.wire.mqtt import Connack, PacketError
from mqtt_cert_exporter.probe.wire.tls import (
    ClientCertificateRequired,
    TlsClosed,
    TlsHandshakeFailure,
    TlsProtocolError,
)
from mqtt_cert_exporter.probe.wire.websocket import UpgradeRejected, WebSocketProtocolError

#: Brokers remembered at most (multi-target mode lets strangers name targets: the memory is bounded).
MAX_REMEMBERED = 4096
#: Room per configured broker (its addresses, for ``addresses: all``).
LISTENERS_PER_BROKER = 4
#: At most this long for the learning exchange (what is left of the deadline serves the real probe).
LEARN_TIMEOUT = 3.0
#: How a learning exchange ends without a CONNACK (a broker that cannot parse v5 closes or misbehaves)
ANSWERLESS: tuple[type[Exception], ...] = (
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


@dataclass(frozen=True, slots=True)
class Where:
    """What identifies a broker's listener for the memory: the same name at another address is another
    listener (``addresses: all``), and so is another path on the same port."""

    broker: str
    host: str
    port: int
    scheme: str
    path: str


def spoken(answer: Connack | None) -> MqttProtocol:
    """The version to use after a credential-less v5 CONNECT got ``answer`` (None: no CONNACK at all).

    A v5 CONNACK means v5, unless it says "unsupported protocol version"; a 3.1.1 return code, or no
    answer (a broker that cannot parse v5 closes or stays silent), means 3.1.1, which every broker parses.
    """
    if answer is None or answer.protocol == PROTOCOL_311 or answer.unsupported_version:
        return "3.1.1"
    return "5"


class _Lru:
    def __init__(self, size: int) -> None:
        self.size = size
        self.known: OrderedDict[Where, MqttProtocol] = OrderedDict()

    def get(self, where: Where) -> MqttProtocol | None:
        protocol = self.known.get(where)
        if protocol is not None:
            self.known.move_to_end(where)
        return protocol

    def put(self, where: Where, protocol: MqttProtocol) -> None:
        self.known[where] = protocol
        self.known.move_to_end(where)
        while len(self.known) > self.size:
            self.known.popitem(last=False)


class ProtocolMemory:
    """The version learned per listener, least recently used forgotten first.

    The configured brokers (``configure``) have room of their own, sized by the configuration: a fleet
    larger than the bound for /probe targets must not learn every version again on every probe (at
    10,000 brokers it did: a second handshake per probe), and strangers' targets must not push them out.
    """

    def __init__(self, size: int = MAX_REMEMBERED) -> None:
        self._strangers = _Lru(size)
        self._configured = _Lru(size)
        self._names: frozenset[str] = frozenset()

    def configure(self, names: Iterable[str]) -> None:
        """The brokers of the configuration now: room for a few listeners each (``addresses: all``)."""
        self._names = frozenset(names)
        self._configured.size = max(self._strangers.size, LISTENERS_PER_BROKER * len(self._names))
        for where in [where for where in self._configured.known if where.broker not in self._names]:
            del self._configured.known[where]

    def _room(self, where: Where) -> _Lru:
        return self._configured if where.broker in self._names else self._strangers

    def get(self, where: Where) -> MqttProtocol | None:
        return self._room(where).get(where)

    def learn(self, where: Where, protocol: MqttProtocol) -> None:
        self._room(where).put(where, protocol)

    def forget(self, where: Where) -> None:
        self._room(where).known.pop(where, None)

    def __len__(self) -> int:
        return len(self._strangers.known) + len(self._configured.known)
