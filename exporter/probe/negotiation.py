"""``mqtt.protocol: auto``: which MQTT version a broker speaks, learned without sending credentials.

A broker that cannot parse a CONNECT may log it raw (RabbitMQ 3.10 logs a v5 CONNECT byte by byte at
error level, username and password readable) or never answer (amqtt 0.12 with credentials). So the
version is learned with a CONNECT that carries no credentials, on a connection of its own, once per
broker; it is remembered until a probe of that broker fails in the MQTT stage, then learned again.

This module is the pure part: what an answer says, and the bounded memory. The probe does the I/O.
"""

from __future__ import annotations

import ssl
from collections import OrderedDict
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


class ProtocolMemory:
    """The version learned per listener, least recently used forgotten first."""

    def __init__(self, size: int = MAX_REMEMBERED) -> None:
        self._size = size
        self._known: OrderedDict[Where, MqttProtocol] = OrderedDict()

    def get(self, where: Where) -> MqttProtocol | None:
        protocol = self._known.get(where)
        if protocol is not None:
            self._known.move_to_end(where)
        return protocol

    def learn(self, where: Where, protocol: MqttProtocol) -> None:
        self._known[where] = protocol
        self._known.move_to_end(where)
        while len(self._known) > self._size:
            self._known.popitem(last=False)

    def forget(self, where: Where) -> None:
        self._known.pop(where, None)

    def __len__(self) -> int:
        return len(self._known)
