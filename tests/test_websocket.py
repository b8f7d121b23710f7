"""The pure parts of MQTT over WebSockets: the upgrade, the frame codec, and the HTTP head parser."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mqtt_cert_exporter.probe.wire import websocket as ws
from mqtt_cert_exporter.probe.wire.http1 import (
    MAX_HEAD,
    HttpError,
    HttpResponse,
    head_length,
    parse_response_head,
)

# RFC 6455 §1.3's worked example.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def response(status: int = 101, **headers: str) -> HttpResponse:
    base = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Accept": RFC_ACCEPT,
        "Sec-WebSocket-Protocol": "mqtt",
    }
    base.update(headers)
    return HttpResponse(status, "Switching Protocols", tuple((k, v) for k, v in base.items() if v != "-"))


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    return ws.encode_frame(opcode, payload, mask=None, fin=fin)


# -- the upgrade --------------------------------------------------------------------------------


def test_accept_value_is_rfc_6455_example() -> None:
    assert ws.accept_value(RFC_KEY) == RFC_ACCEPT
    assert ws.handshake_key(b"the sample nonce") == RFC_KEY


def test_handshake_key_needs_16_bytes() -> None:
    with pytest.raises(ValueError):
        ws.handshake_key(b"short")


def test_upgrade_request() -> None:
    request = ws.upgrade_request(
        host="broker.example.com", port=8084, path="/mqtt", key=RFC_KEY, user_agent="t/1"
    )
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /mqtt HTTP/1.1"
    assert "Host: broker.example.com:8084" in lines
    assert "Upgrade: websocket" in lines and "Connection: Upgrade" in lines
    assert f"Sec-WebSocket-Key: {RFC_KEY}" in lines and "Sec-WebSocket-Version: 13" in lines
    assert "Sec-WebSocket-Protocol: mqtt" in lines and "User-Agent: t/1" in lines
    assert request.endswith(b"\r\n\r\n")


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [("b.example", 443, "b.example"), ("b.example", 8084, "b.example:8084"), ("::1", 8084, "[::1]:8084")],
)
def test_host_header(host: str, port: int, expected: str) -> None:
    assert ws.host_header(host, port) == expected


@pytest.mark.parametrize("path", ["mqtt", "/a b", "/a\r\nX: y"])
def test_upgrade_request_refuses_bad_paths(path: str) -> None:
    with pytest.raises(ValueError):
        ws.upgrade_request(host="h", port=1, path=path, key=RFC_KEY)


def test_check_upgrade_accepts_a_correct_answer() -> None:
    assert ws.check_upgrade(response(), RFC_KEY) == "mqtt"
    # Header names and the Upgrade token are case-insensitive (Mosquitto sends "Upgrade: WebSocket").
    answer = HttpResponse(
        101,
        "",
        (
            ("upgrade", "WebSocket"),
            ("CONNECTION", "keep-alive, Upgrade"),
            ("sec-websocket-accept", RFC_ACCEPT),
        ),
    )
    assert ws.check_upgrade(answer, RFC_KEY) == ""  # no subprotocol named: tolerated, as paho does


def test_check_upgrade_rejected_status_carries_the_response() -> None:
    with pytest.raises(ws.UpgradeRejected) as caught:
        ws.check_upgrade(HttpResponse(404, "Not Found"), RFC_KEY)
    assert caught.value.response.status == 404
    assert "HTTP 404 Not Found" in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Upgrade": "-"}, "Upgrade: websocket"),
        ({"Connection": "close"}, "Connection: Upgrade"),
        ({"Sec-WebSocket-Accept": "-"}, "lacks Sec-WebSocket-Accept"),
        ({"Sec-WebSocket-Accept": "AAAA"}, "wrong Sec-WebSocket-Accept"),
        ({"Sec-WebSocket-Protocol": "mqttv3.1"}, "subprotocol"),
        ({"Sec-WebSocket-Extensions": "permessage-deflate"}, "extension"),
    ],
)
def test_check_upgrade_protocol_errors(headers: dict[str, str], message: str) -> None:
    with pytest.raises(ws.WebSocketProtocolError, match=message):
        ws.check_upgrade(response(101, **headers), RFC_KEY)


# -- HTTP heads ---------------------------------------------------------------------------------


def test_head_length_and_parse() -> None:
    raw = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nX-Multi: a\r\nx-multi: b\r\n\r\n\x82\x02"
    )
    length = head_length(raw)
    assert length == len(raw) - 2
    parsed = parse_response_head(raw[:length])
    assert parsed.status == 101 and parsed.reason == "Switching Protocols"
    assert parsed.header("upgrade") == "websocket" and parsed.header("X-MULTI") == "a, b"
    assert parsed.header("missing") is None


@pytest.mark.parametrize("partial", [b"", b"H", b"HTTP/1.1 10", b"HTTP/1.1 101 OK\r\nUpgrade: websocket\r\n"])
def test_head_length_incomplete(partial: bytes) -> None:
    assert head_length(partial) is None


@pytest.mark.parametrize("data", [b"\x16\x03\x01", b"SSH-2.0-OpenSSH", b"\x20\x02\x00\x00"])
def test_head_length_refuses_what_is_not_http_at_once(data: bytes) -> None:
    with pytest.raises(HttpError, match="not an HTTP response"):
        head_length(data)


def test_head_length_is_bounded() -> None:
    with pytest.raises(HttpError, match="longer than"):
        head_length(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * MAX_HEAD)


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 101 x\r\n\r\n",
        b"HTTP/1.1 1O1 x\r\n\r\n",
        b"HTTP/1.1 101\r\nno colon\r\n\r\n",
        b"HTTP/1.1 101\r\n : v\r\n\r\n",
    ],
)
def test_parse_response_head_malformed(head: bytes) -> None:
    with pytest.raises(HttpError):
        parse_response_head(head)


# -- frames -------------------------------------------------------------------------------------


def test_client_frames_are_masked_as_rfc_6455_shows() -> None:
    # RFC 6455 §5.7: a masked "Hello".
    frame = ws.encode_frame(ws.OP_TEXT, b"Hello", mask=bytes.fromhex("37fa213d"))
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")


@pytest.mark.parametrize(("size", "header_length"), [(0, 2), (125, 2), (126, 4), (65535, 4), (65536, 10)])
def test_length_encodings(size: int, header_length: int) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    frame = server_frame(ws.OP_BINARY, payload)
    assert len(frame) == header_length + size
    parsed = ws.parse_frame(frame, max_payload=1 << 20)
    assert parsed == (ws.Frame(True, ws.OP_BINARY, payload), len(frame))


@given(payload=st.binary(max_size=300), mask=st.binary(min_size=4, max_size=4))
def test_masking_is_its_own_inverse(payload: bytes, mask: bytes) -> None:
    assert ws.apply_mask(ws.apply_mask(payload, mask), mask) == payload


@given(payload=st.binary(max_size=70000), cut=st.integers(min_value=0, max_value=70010))
def test_parse_frame_needs_the_whole_frame(payload: bytes, cut: int) -> None:
    frame = server_frame(ws.OP_BINARY, payload)
    parsed = ws.parse_frame(frame[:cut], max_payload=1 << 20)
    if cut >= len(frame):
        assert parsed == (ws.Frame(True, ws.OP_BINARY, payload), len(frame))
    else:
        assert parsed is None


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (bytes([0x82, 0x81]) + b"\x00\x00\x00\x00x", "masked"),
        (bytes([0xC2, 0x00]), "reserved bits"),
        (bytes([0x83, 0x00]), "unknown frame opcode"),
        (bytes([0x09, 0x00]), "fragmented control"),
        (bytes([0x89, 0x7E, 0x00, 0x7E]) + b"x" * 126, "control frame of 126"),
        (bytes([0x82, 0x7E, 0x00, 0x05]) + b"hello", "minimally"),
        (bytes([0x82, 0x7F]) + struct.pack("!Q", 1 << 63), "64-bit"),
        (bytes([0x82, 0x7F]) + struct.pack("!Q", 1 << 40), "more than"),
    ],
)
def test_parse_frame_refuses_what_no_server_may_send(frame: bytes, message: str) -> None:
    with pytest.raises(ws.WebSocketProtocolError, match=message):
        ws.parse_frame(frame)


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    header = bytes([0x82, 0x7F]) + struct.pack("!Q", ws.MAX_FRAME_PAYLOAD + 1)
    with pytest.raises(ws.WebSocketProtocolError):
        ws.parse_frame(header)  # not one payload byte needed to know


def test_encode_frame_refuses_invalid_control_frames() -> None:
    with pytest.raises(ValueError):
        ws.encode_frame(ws.OP_PING, b"x" * 126, mask=None)
    with pytest.raises(ValueError):
        ws.encode_frame(ws.OP_CLOSE, b"", mask=None, fin=False)


def test_close_payload_round_trip() -> None:
    assert ws.parse_close_payload(ws.close_payload(1001, "going away")) == (1001, "going away")
    assert ws.parse_close_payload(b"") == (None, "")
    with pytest.raises(ws.WebSocketProtocolError):
        ws.parse_close_payload(b"\x03")


# -- the decoder --------------------------------------------------------------------------------


def test_decoder_hands_on_fragments_as_a_byte_stream_with_control_frames_between() -> None:
    stream = (
        server_frame(ws.OP_BINARY, b"\x20", fin=False)
        + server_frame(ws.OP_PING, b"hi")
        + server_frame(ws.OP_CONTINUATION, b"\x02\x00", fin=False)
        + server_frame(ws.OP_CONTINUATION, b"\x00", fin=True)
        + server_frame(ws.OP_PONG, b"")
        + server_frame(ws.OP_CLOSE, ws.close_payload(1000, "bye"))
        + server_frame(ws.OP_BINARY, b"ignored after close")
    )
    decoder = ws.FrameDecoder()
    events = []
    for index in range(len(stream)):  # byte by byte: nothing depends on how TCP cuts the stream
        events += decoder.feed(stream[index : index + 1])
    assert events == [
        ws.Data(b"\x20"),
        ws.Ping(b"hi"),
        ws.Data(b"\x02\x00"),
        ws.Data(b"\x00"),
        ws.Pong(b""),
        ws.Close(1000, "bye"),
    ]
    assert decoder.closed


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (server_frame(ws.OP_TEXT, b"{}"), "text frame"),
        (server_frame(ws.OP_CONTINUATION, b"x"), "without a message"),
        (
            server_frame(ws.OP_BINARY, b"a", fin=False) + server_frame(ws.OP_BINARY, b"b"),
            "before the previous",
        ),
    ],
)
def test_decoder_protocol_errors(stream: bytes, message: str) -> None:
    with pytest.raises(ws.WebSocketProtocolError, match=message):
        ws.FrameDecoder().feed(stream)


def test_decoder_bounds_what_it_buffers() -> None:
    decoder = ws.FrameDecoder(max_payload=1000, max_buffer=2000)
    header = bytes([0x82, 0x7E]) + struct.pack("!H", 900)
    decoder.feed(header + b"x" * 800)  # an incomplete frame, within bounds
    with pytest.raises(ws.WebSocketProtocolError):
        decoder.feed(b"x" * 100_000)
