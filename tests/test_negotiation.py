"""``mqtt.protocol: auto``, pure: what a credential-less v5 CONNECT's answer says, the bounded memory, and
3.1.1 return codes read as such whatever version was sent."""

from __future__ import annotations

import pytest

from mqtt_cert_exporter.connack import connack_meaning
from mqtt_cert_exporter.probe.negotiation import ProtocolMemory, Where, spoken
from mqtt_cert_exporter.probe.wire.mqtt import parse_connack


@pytest.mark.parametrize(
    ("packet", "table", "code", "meaning"),
    [
        # amqtt 0.12 answers a v5 CONNECT in 3.1.1: "unacceptable protocol version", not "unknown code 1"
        (b"\x20\x02\x00\x01", "3.1.1", 1, "unacceptable protocol version"),
        (b"\x20\x02\x00\x05", "3.1.1", 5, "not authorized"),
        (b"\x20\x02\x00\x00", "5", 0, "success"),
        (b"\x20\x03\x00\x84\x00", "5", 0x84, "unsupported protocol version"),
        (b"\x20\x02\x00\x87", "5", 0x87, "not authorized"),
    ],
)
def test_a_connack_to_a_v5_connect_is_read_in_the_version_it_is_in(
    packet: bytes, table: str, code: int, meaning: str
) -> None:
    connack = parse_connack(packet, "5")
    assert (connack.protocol, connack.code) == (table, code)
    assert connack_meaning(connack.protocol, connack.code) == meaning


@pytest.mark.parametrize(
    ("packet", "protocol"),
    [
        (None, "3.1.1"),  # closed or silent: RabbitMQ 3.10 cannot parse v5
        (b"\x20\x02\x00\x01", "3.1.1"),  # amqtt: 3.1.1 "unacceptable protocol version"
        (b"\x20\x03\x00\x84\x00", "3.1.1"),  # v5 "unsupported protocol version"
        (b"\x20\x03\x00\x00\x00", "5"),  # accepted anonymously
        (b"\x20\x03\x00\x87\x00", "5"),  # Mosquitto without anonymous access: refused, in v5
        (b"\x20\x03\x00\x86\x00", "5"),
    ],
)
def test_the_version_learned_from_the_answer(packet: bytes | None, protocol: str) -> None:
    assert spoken(None if packet is None else parse_connack(packet, "5")) == protocol


def test_memory_is_bounded_and_forgets_the_least_recently_used() -> None:
    memory = ProtocolMemory(size=2)
    first, second, third = (Where(f"b{i}", "127.0.0.1", 8883, "mqtts", "") for i in range(3))
    memory.learn(first, "5")
    memory.learn(second, "3.1.1")
    assert memory.get(first) == "5"  # first is now the most recently used
    memory.learn(third, "5")
    assert (memory.get(first), memory.get(second), memory.get(third)) == ("5", None, "5")
    memory.forget(first)
    assert memory.get(first) is None and len(memory) == 1


def test_configured_brokers_are_remembered_beyond_the_bound_and_strangers_cannot_push_them_out() -> None:
    # a fleet larger than the bound once learned every version again on every probe (a second handshake)
    memory = ProtocolMemory(size=2)
    fleet = [Where(f"b{i}", "127.0.0.1", 8883 + i, "mqtts", "") for i in range(10)]
    memory.configure(where.broker for where in fleet)
    for where in fleet:
        memory.learn(where, "5")
    strangers = [Where(f"127.0.0.1:{port}", "127.0.0.1", port, "mqtts", "") for port in range(9000, 9100)]
    for where in strangers:
        memory.learn(where, "3.1.1")
    assert [memory.get(where) for where in fleet] == ["5"] * 10
    assert [memory.get(where) for where in strangers[-2:]] == ["3.1.1"] * 2
    assert memory.get(strangers[0]) is None and len(memory) == 12
    memory.configure(where.broker for where in fleet[:3])  # a reload that drops seven brokers
    assert len(memory) == 5 and memory.get(fleet[5]) is None
