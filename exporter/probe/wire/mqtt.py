"""The few MQTT packets a probe needs: CONNECT and DISCONNECT out, CONNACK in.

The codec is pure (bytes in, values out) so it can be tested and fuzzed directly; ``exchange``
is the thin I/O on top. A hostile broker can claim any remaining length: we never read more than
``MAX_CONNACK_LENGTH`` bytes of a CONNACK.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mqtt_cert_exporter.connack import PROTOCOL_5, PROTOCOL_311, UNSUPPORTED_VERSION_CODES

CONNACK_TYPE = 0x20
DISCONNECT = b"\xe0\x00"  # valid for 3.1.1 and for 5 (reason 0x00 "normal disconnection" implied)
#: A v5 CONNACK carries properties (server keep alive, topic alias maximum...): a few hundred bytes at most
#: in practice; the spec allows more but a probe has no use for it.
MAX_CONNACK_LENGTH = 4096


class PacketError(ValueError):
    """The bytes are not the packet we expected (a protocol error of the peer)."""


class IncompletePacket(Exception):
    """More bytes are needed to decode a packet."""


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    code: int
    #: raw v5 properties (not decoded: the probe only reports the code)
    properties: bytes = b""
    #: the table ``code`` belongs to: a broker that only speaks 3.1.1 answers a v5 CONNECT with a 3.1.1
    #: return code (amqtt: ``20 02 00 01``), which must not be read as a v5 reason code
    protocol: str = PROTOCOL_5

    @property
    def unsupported_version(self) -> bool:
        return self.code == UNSUPPORTED_VERSION_CODES[self.protocol]


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= 268_435_455:
        raise ValueError(f"remaining length out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """Decode an MQTT variable byte integer at ``offset``: (value, offset after it)."""
    value = 0
    for index in range(4):
        if offset + index >= len(data):
            raise IncompletePacket
        byte = data[offset + index]
        value += (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, offset + index + 1
    raise PacketError("variable byte integer longer than 4 bytes")


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def encode_connect(
    *,
    protocol: str,
    client_id: str,
    username: str | None = None,
    password: str | None = None,
    keepalive: int = 30,
) -> bytes:
    """A clean-session CONNECT without will."""
    level = 5 if protocol == PROTOCOL_5 else 4
    flags = 0x02  # clean session / clean start
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    variable = _utf8("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        variable += b"\x00"  # no properties
    payload = _utf8(client_id)
    if username is not None:
        payload += _utf8(username)
    if password is not None:
        raw = password.encode()
        payload += struct.pack("!H", len(raw)) + raw
    body = variable + payload
    return bytes([0x10]) + encode_varint(len(body)) + body


def parse_connack(packet: bytes, protocol: str) -> Connack:
    """Parse one complete CONNACK packet (fixed header included)."""
    total = connack_frame_length(packet)
    length, start = decode_varint(packet, 1)
    body = packet[start:total]
    if len(body) < length:
        raise IncompletePacket
    if len(packet) > total:
        raise PacketError("trailing bytes after CONNACK")
    if protocol == PROTOCOL_311:
        if length != 2:
            hint = " (a MQTT 5 CONNACK?)" if length > 2 else ""
            raise PacketError(f"3.1.1 CONNACK must have 2 bytes, got {length}{hint}")
    elif length < 2:
        raise PacketError(f"CONNACK too short: {length} bytes")
    flags, code = body[0], body[1]
    if flags & 0xFE:
        raise PacketError(f"reserved CONNACK flags set: 0x{flags:02x}")
    properties = b""
    if protocol == PROTOCOL_5 and length > 2:
        props_length, props_start = decode_varint(body, 2)
        if props_start + props_length != length:
            raise PacketError("CONNACK property length does not match the packet")
        properties = body[props_start:]
    # v5 reason codes are 0 or >= 0x80; 1-5 in a bare 2-byte CONNACK are 3.1.1 return codes.
    table = PROTOCOL_311 if protocol == PROTOCOL_311 or (length == 2 and 0 < code < 0x80) else PROTOCOL_5
    return Connack(session_present=bool(flags & 1), code=code, properties=properties, protocol=table)


def connack_frame_length(buffer: bytes) -> int:
    """How many bytes the packet at the start of ``buffer`` occupies in total.

    Raises IncompletePacket when the fixed header itself is not complete yet, PacketError when the
    packet is not a CONNACK or claims an absurd length (so we stop reading a hostile stream early).
    """
    if not buffer:
        raise IncompletePacket
    if buffer[0] != CONNACK_TYPE:
        kind = buffer[0] >> 4
        raise PacketError(f"expected CONNACK (type 2), got packet type {kind} (first byte 0x{buffer[0]:02x})")
    length, start = decode_varint(buffer, 1)
    if length > MAX_CONNACK_LENGTH:
        raise PacketError(f"CONNACK claims {length} bytes, more than any CONNACK needs")
    return start + length


async def read_connack(read: Callable[[], Awaitable[bytes]], protocol: str) -> Connack:
    """Read exactly one CONNACK using ``read`` (returns some bytes, b"" at EOF).

    Raises EOFError when the peer closes before a whole CONNACK arrived.
    """
    buffer = b""
    while True:
        try:
            total = connack_frame_length(buffer)
        except IncompletePacket:
            total = None
        if total is not None and len(buffer) >= total:
            return parse_connack(buffer[:total], protocol)
        chunk = await read()
        if not chunk:
            raise EOFError("connection closed before CONNACK")
        buffer += chunk
        if len(buffer) > MAX_CONNACK_LENGTH + 5 and total is None:
            raise PacketError("no valid CONNACK header in the reply")
