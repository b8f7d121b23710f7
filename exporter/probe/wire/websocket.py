"""MQTT over WebSockets (RFC 6455; MQTT 3.1.1 §6 and 5 §6): the HTTP upgrade and the frame codec. Pure.

Bytes in, values out; randomness (the handshake key, frame masks) is passed in by the caller, so every
function here is deterministic and tested directly. The I/O lives in ``exporter.probe.wire.transport``.

What a client must do and what we check of the server:

* the upgrade request offers the ``mqtt`` subprotocol; the answer must be ``101`` with ``Upgrade:
  websocket``, ``Connection: upgrade`` and the right ``Sec-WebSocket-Accept``; a server that selects
  another subprotocol is refused (one that selects none is tolerated, as paho does);
* client frames are masked, server frames must not be; no extension was negotiated, so RSV bits must be
  0; MQTT travels in binary frames only (a text frame is a protocol error);
* data may be fragmented (continuation frames) and an MQTT packet may span frames: each frame's
  payload is handed on as it arrives, as a byte stream;
* control frames (ping, pong, close) are at most 125 bytes, never fragmented, and may arrive between
  the fragments of a message;
* every length is checked against a cap *before* buffering, so a hostile server cannot make us hold
  a 2^63-byte frame.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from mqtt_cert_exporter.probe.wire.http1 import HttpResponse

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SUBPROTOCOL = "mqtt"
#: The largest frame payload we accept from a server. A CONNACK is a few bytes; the cap bounds memory.
MAX_FRAME_PAYLOAD = 64 * 1024
MAX_CONTROL_PAYLOAD = 125

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA
_DATA_OPCODES = frozenset({OP_CONTINUATION, OP_TEXT, OP_BINARY})
_CONTROL_OPCODES = frozenset({OP_CLOSE, OP_PING, OP_PONG})

CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002


class WebSocketProtocolError(Exception):
    """The server broke the WebSocket protocol (handshake or framing)."""


class UpgradeRejected(Exception):
    """The server answered the upgrade request with an HTTP status other than 101."""

    def __init__(self, response: HttpResponse) -> None:
        reason = f" {response.reason}" if response.reason else ""
        super().__init__(f"the server refused the WebSocket upgrade: HTTP {response.status}{reason}")
        self.response = response


# -- the upgrade --------------------------------------------------------------------------------


def handshake_key(nonce: bytes) -> str:
    """``Sec-WebSocket-Key`` from 16 random bytes."""
    if len(nonce) != 16:
        raise ValueError("the WebSocket key nonce is 16 bytes")
    return base64.b64encode(nonce).decode("ascii")


def accept_value(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii"), usedforsecurity=False).digest()  # RFC 6455
    return base64.b64encode(digest).decode("ascii")


def host_header(host: str, port: int) -> str:
    """``Host`` for the upgrade: the server name, with the port unless it is 443 (wss's default)."""
    shown = f"[{host}]" if ":" in host else host
    return shown if port == 443 else f"{shown}:{port}"


def upgrade_request(*, host: str, port: int, path: str, key: str, user_agent: str = "") -> bytes:
    """The HTTP/1.1 GET that asks for a WebSocket carrying MQTT."""
    if not path.startswith("/") or any(c.isspace() or ord(c) < 0x20 for c in path):
        raise ValueError("the WebSocket path must start with / and contain no whitespace")
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host_header(host, port)}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Sec-WebSocket-Protocol: {SUBPROTOCOL}",
    ]
    if user_agent:
        lines.append(f"User-Agent: {user_agent}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def check_upgrade(response: HttpResponse, key: str) -> str:
    """Validate the answer to our upgrade request; returns the selected subprotocol ("" if none).

    Raises UpgradeRejected for a status other than 101, WebSocketProtocolError for a 101 that does not
    complete the handshake correctly.
    """
    if response.status != 101:
        raise UpgradeRejected(response)
    if not response.has_token("Upgrade", "websocket"):
        raise WebSocketProtocolError("the 101 response lacks 'Upgrade: websocket'")
    if not response.has_token("Connection", "upgrade"):
        raise WebSocketProtocolError("the 101 response lacks 'Connection: Upgrade'")
    accept = response.header("Sec-WebSocket-Accept")
    if accept is None:
        raise WebSocketProtocolError("the 101 response lacks Sec-WebSocket-Accept")
    if accept.strip() != accept_value(key):
        raise WebSocketProtocolError("wrong Sec-WebSocket-Accept: the server did not answer our key")
    if response.header("Sec-WebSocket-Extensions"):
        raise WebSocketProtocolError("the server selected a WebSocket extension we did not offer")
    protocol = (response.header("Sec-WebSocket-Protocol") or "").strip()
    if protocol and protocol.lower() != SUBPROTOCOL:
        raise WebSocketProtocolError(
            f"the server selected subprotocol {protocol[:40]!r}, not {SUBPROTOCOL!r}"
        )
    return protocol


# -- frames -------------------------------------------------------------------------------------


def apply_mask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` (masking and unmasking are the same operation)."""
    if len(mask) != 4:
        raise ValueError("a WebSocket mask is 4 bytes")
    if not payload:
        return b""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return value.to_bytes(len(payload), "big")


def encode_frame(opcode: int, payload: bytes, *, mask: bytes | None, fin: bool = True) -> bytes:
    """One frame. Clients must pass a fresh random 4-byte ``mask``; ``None`` makes a server frame."""
    if opcode in _CONTROL_OPCODES and (len(payload) > MAX_CONTROL_PAYLOAD or not fin):
        raise ValueError("control frames carry at most 125 bytes and are never fragmented")
    if not 0 <= opcode <= 0xF:
        raise ValueError(f"opcode out of range: {opcode}")
    first = (0x80 if fin else 0) | opcode
    length = len(payload)
    mask_bit = 0x80 if mask is not None else 0
    if length < 126:
        header = struct.pack("!BB", first, mask_bit | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, length)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, length)
    if mask is None:
        return header + payload
    return header + mask + apply_mask(payload, mask)


@dataclass(frozen=True, slots=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes


def parse_frame(buffer: bytes, *, max_payload: int = MAX_FRAME_PAYLOAD) -> tuple[Frame, int] | None:
    """The server frame at the start of ``buffer`` and the bytes it occupies; None when incomplete.

    Raises WebSocketProtocolError for a frame no server may send (masked, RSV bits, unknown opcode,
    fragmented or oversized control frame, non-minimal or oversized length).
    """
    if len(buffer) < 2:
        return None
    first, second = buffer[0], buffer[1]
    fin, opcode = bool(first & 0x80), first & 0x0F
    _check_head(first, second)
    length_and_offset = _payload_length(buffer, second & 0x7F)
    if length_and_offset is None:
        return None
    length, offset = length_and_offset
    _check_length(opcode, fin, length, max_payload)
    end = offset + length
    if len(buffer) < end:
        return None
    return Frame(fin=fin, opcode=opcode, payload=bytes(buffer[offset:end])), end


def _check_head(first: int, second: int) -> None:
    opcode = first & 0x0F
    if first & 0x70:
        raise WebSocketProtocolError(f"reserved bits set in a frame (0x{first:02x}): no extension was agreed")
    if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
        raise WebSocketProtocolError(f"unknown frame opcode 0x{opcode:x}")
    if second & 0x80:
        raise WebSocketProtocolError("the server masked a frame (only clients mask)")


def _payload_length(buffer: bytes, short: int) -> tuple[int, int] | None:
    """(payload length, where the payload starts); None while the extended length is incomplete."""
    if short == 126:
        if len(buffer) < 4:
            return None
        (length,) = struct.unpack_from("!H", buffer, 2)
        if length < 126:
            raise WebSocketProtocolError("frame length not minimally encoded")
        return length, 4
    if short == 127:
        if len(buffer) < 10:
            return None
        (length,) = struct.unpack_from("!Q", buffer, 2)
        if length >> 63 or length < 1 << 16:
            raise WebSocketProtocolError("invalid 64-bit frame length")
        return length, 10
    return short, 2


def _check_length(opcode: int, fin: bool, length: int, max_payload: int) -> None:
    if opcode in _CONTROL_OPCODES:
        if not fin:
            raise WebSocketProtocolError("fragmented control frame")
        if length > MAX_CONTROL_PAYLOAD:
            raise WebSocketProtocolError(f"control frame of {length} bytes (at most 125)")
    if length > max_payload:
        raise WebSocketProtocolError(f"frame of {length} bytes, more than the {max_payload} a probe accepts")


def close_payload(code: int, reason: str = "") -> bytes:
    raw = reason.encode()[: MAX_CONTROL_PAYLOAD - 2]
    return struct.pack("!H", code) + raw


def parse_close_payload(payload: bytes) -> tuple[int | None, str]:
    """(status code, reason) of a close frame; (None, "") when it carries none."""
    if not payload:
        return None, ""
    if len(payload) == 1:
        raise WebSocketProtocolError("close frame with a 1-byte payload")
    (code,) = struct.unpack_from("!H", payload)
    return code, payload[2:].decode("utf-8", errors="replace")


# -- a stream of server frames ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    """Payload of a binary (or continuation) frame: MQTT bytes."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Close:
    code: int | None
    reason: str


Event = Data | Ping | Pong | Close


class FrameDecoder:
    """Bytes from the server in, events out; tracks fragmentation. Pure (no I/O)."""

    def __init__(
        self, *, max_payload: int = MAX_FRAME_PAYLOAD, max_buffer: int = 2 * MAX_FRAME_PAYLOAD
    ) -> None:
        self._buffer = b""
        self._max_payload = max_payload
        self._max_buffer = max(max_buffer, max_payload + 14)
        self._in_message = False
        self.closed = False

    def feed(self, data: bytes) -> list[Event]:
        if self.closed:
            return []  # nothing after a close frame counts
        self._buffer += data
        if len(self._buffer) > self._max_buffer:
            raise WebSocketProtocolError(f"more than {self._max_buffer} bytes of unparsed frames")
        events: list[Event] = []
        while not self.closed:
            parsed = parse_frame(self._buffer, max_payload=self._max_payload)
            if parsed is None:
                break
            frame, used = parsed
            self._buffer = self._buffer[used:]
            event = self._event(frame)
            if event is not None:
                events.append(event)
        return events

    def _event(self, frame: Frame) -> Event | None:
        if frame.opcode == OP_PING:
            return Ping(frame.payload)
        if frame.opcode == OP_PONG:
            return Pong(frame.payload)
        if frame.opcode == OP_CLOSE:
            self.closed = True
            code, reason = parse_close_payload(frame.payload)
            return Close(code, reason)
        if frame.opcode == OP_TEXT:
            raise WebSocketProtocolError("text frame: MQTT travels in binary frames only")
        if frame.opcode == OP_CONTINUATION and not self._in_message:
            raise WebSocketProtocolError("continuation frame without a message to continue")
        if frame.opcode == OP_BINARY and self._in_message:
            raise WebSocketProtocolError("new message before the previous fragmented one ended")
        self._in_message = not frame.fin
        return Data(frame.payload) if frame.payload else None
