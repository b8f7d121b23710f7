"""The CONNECT/CONNACK codec, pure."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.connack import connack_meaning
from mqtt_cert_exporter.probe.steps import client_id
from mqtt_cert_exporter.probe.wire.mqtt import (
    IncompletePacket,
    PacketError,
    decode_varint,
    encode_connect,
    encode_varint,
    parse_connack,
    read_connack,
)


@pytest.mark.parametrize(
    ("packet", "protocol", "code", "session_present"),
    [
        (b"\x20\x02\x00\x00", "3.1.1", 0, False),
        (b"\x20\x02\x01\x00", "3.1.1", 0, True),
        (b"\x20\x02\x00\x05", "3.1.1", 5, False),
        (b"\x20\x03\x00\x00\x00", "5", 0, False),
        (b"\x20\x03\x00\x87\x00", "5", 135, False),
        # A real Mosquitto 2.0 v5 CONNACK with properties (field notes).
        (bytes.fromhex("200900000622000a210014"), "5", 0, False),
    ],
)
def test_parse_connack(packet: bytes, protocol: str, code: int, session_present: bool) -> None:
    connack = parse_connack(packet, protocol)
    assert connack.code == code
    assert connack.session_present is session_present


@pytest.mark.parametrize(
    ("packet", "protocol", "message"),
    [
        (b"\x30\x02\x00\x00", "5", "expected CONNACK"),
        (b"\x20\x03\x00\x00\x00", "3.1.1", "MQTT 5 CONNACK"),
        (b"\x20\x01\x00", "5", "too short"),
        (b"\x20\x02\x02\x00", "3.1.1", "reserved"),
        (b"\x20\x05\x00\x00\x05\x00\x00", "5", "property length"),
        (b"\x20\xff\xff\xff\x7f", "5", "more than any CONNACK"),
        (b"\x20\xff\xff\xff\xff\x01", "5", "longer than 4 bytes"),
    ],
)
def test_parse_connack_rejects(packet: bytes, protocol: str, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        parse_connack(packet, protocol)


def test_parse_connack_incomplete() -> None:
    with pytest.raises(IncompletePacket):
        parse_connack(b"\x20\x02\x00", "3.1.1")


def test_connect_encoding_311_with_credentials() -> None:
    packet = encode_connect(protocol="3.1.1", client_id="probe", username="u", password="p", keepalive=30)
    assert packet == bytes.fromhex("101700044d51545404c2001e000570726f6265000175000170")


def test_connect_encoding_5_has_empty_properties() -> None:
    packet = encode_connect(protocol="5", client_id="c")
    # fixed header, "MQTT", level 5, clean start, keepalive 30, properties length 0, client id
    assert packet == bytes.fromhex("100e00044d51545405020" + "01e00000163")


def test_meanings() -> None:
    assert connack_meaning("5", 0x87) == "not authorized"
    assert connack_meaning("3.1.1", 5) == "not authorized"
    assert connack_meaning("3.1.1", 42) == "unknown code 42"


@given(st.integers(min_value=0, max_value=268_435_455))
def test_varint_round_trip(value: int) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))
    assert 1 <= len(encoded) <= 4


@given(st.binary(max_size=64), st.sampled_from(["5", "3.1.1"]))
def test_parse_connack_never_raises_anything_else(data: bytes, protocol: str) -> None:
    try:
        parse_connack(data, protocol)
    except (PacketError, IncompletePacket):
        pass


@given(st.lists(st.binary(min_size=1, max_size=8), max_size=40), st.sampled_from(["5", "3.1.1"]))
def test_read_connack_over_arbitrary_chunks_ends(chunks: list[bytes], protocol: str) -> None:
    """Whatever a hostile broker sends, read_connack returns, raises a packet error, or sees EOF."""
    remaining = list(chunks)

    async def read() -> bytes:
        return remaining.pop(0) if remaining else b""

    async def run() -> None:
        try:
            await read_connack(read, protocol)
        except (PacketError, EOFError):
            pass

    asyncio.run(run())


def test_read_connack_split_across_reads() -> None:
    chunks = [b"\x20", b"\x09\x00\x00\x06", b"\x22\x00\x0a\x21\x00\x14"]

    async def read() -> bytes:
        return chunks.pop(0) if chunks else b""

    connack = asyncio.run(read_connack(read, "5"))
    assert connack.code == 0


def test_generated_client_ids_differ_per_connection_and_keep_their_form() -> None:
    """A broker drops the older of two sessions with one client id: concurrent probes of one broker
    (``addresses: all``, a version question) must never share one."""
    broker = BrokerConfig(name="b", target=Target("127.0.0.1", 8883))
    generated = [client_id(broker) for _ in range(1000)]
    assert len(set(generated)) == 1000
    assert all(re.fullmatch(r"mqtt-cert-exporter-[0-9a-f]{12}", found) for found in generated)
    configured = dataclasses.replace(broker, mqtt=dataclasses.replace(broker.mqtt, client_id="probe-1"))
    assert client_id(configured) == "probe-1"
