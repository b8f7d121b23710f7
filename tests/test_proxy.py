"""The proxy dialogues (SOCKS5, HTTP CONNECT), driven with canned answers: no sockets."""

from __future__ import annotations

import base64
import socket

import pytest

from mqtt_cert_exporter.config import ProxySettings, Secret
from mqtt_cert_exporter.probe.wire import proxy
from mqtt_cert_exporter.probe.wire.proxy import ProxyError, ProxyFailure, ReadExactly, ReadHead, Send

SOCKS_OK_V4 = bytes([5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38])


def run(dialogue: proxy.Dialogue, answers: list[bytes]) -> list[bytes]:
    """Play a dialogue against canned answers; returns what it sent. Each read gets the next answer."""
    sent: list[bytes] = []
    pending = list(answers)
    reply = b""
    try:
        step = next(dialogue)
        while True:
            if isinstance(step, Send):
                sent.append(step.data)
                reply = b""
            elif isinstance(step, ReadExactly):
                reply = pending.pop(0)
                assert len(reply) == step.count, (step, reply)
            else:
                assert isinstance(step, ReadHead)
                reply = pending.pop(0)
            step = dialogue.send(reply)
    except StopIteration:
        pass
    assert not pending, "the dialogue ended before reading every answer"
    return sent


def test_socks5_without_credentials_to_an_ipv4_address() -> None:
    sent = run(proxy.socks5("10.0.0.7", 8883), [b"\x05\x00", SOCKS_OK_V4[:4], SOCKS_OK_V4[4:]])
    assert sent == [b"\x05\x01\x00", b"\x05\x01\x00\x01\x0a\x00\x00\x07\x22\xb3"]


def test_socks5_ipv6_and_domain_addresses() -> None:
    sent = run(proxy.socks5("::1", 1), [b"\x05\x00", b"\x05\x00\x00\x04", b"\x00" * 18])
    assert sent[1] == b"\x05\x01\x00\x04" + b"\x00" * 15 + b"\x01" + b"\x00\x01"
    sent = run(
        proxy.socks5("mqtt.example.com", 8883), [b"\x05\x00", b"\x05\x00\x00\x03", b"\x04", b"host\x00\x01"]
    )
    assert sent[1] == b"\x05\x01\x00\x03\x10mqtt.example.com\x22\xb3"


def test_socks5_user_password() -> None:
    answers = [b"\x05\x02", b"\x01\x00", SOCKS_OK_V4[:4], SOCKS_OK_V4[4:]]
    sent = run(proxy.socks5("10.0.0.7", 8883, "monitor", "pässword"), answers)
    assert sent[0] == b"\x05\x02\x00\x02"  # offers "none" and "user/password"
    assert sent[1] == b"\x01\x07monitor\x09" + "pässword".encode()


@pytest.mark.parametrize(
    ("answers", "kind", "message"),
    [
        ([b"\x04\x5a"], ProxyFailure.PROXY_ERROR, "not a SOCKS5 proxy"),
        ([b"\x05\xff"], ProxyFailure.PROXY_ERROR, "does not accept"),
        ([b"\x05\x02"], ProxyFailure.PROXY_ERROR, "did not offer"),
        ([b"\x05\x00", b"\x05\x05\x00\x01"], ProxyFailure.REFUSED, "connection refused"),
        ([b"\x05\x00", b"\x05\x04\x00\x01"], ProxyFailure.UNREACHABLE, "host unreachable"),
        ([b"\x05\x00", b"\x05\x03\x00\x01"], ProxyFailure.UNREACHABLE, "network unreachable"),
        ([b"\x05\x00", b"\x05\x06\x00\x01"], ProxyFailure.TIMEOUT, "TTL expired"),
        ([b"\x05\x00", b"\x05\x02\x00\x01"], ProxyFailure.PROXY_ERROR, "not allowed"),
        ([b"\x05\x00", b"\x05\x00\x00\x09"], ProxyFailure.PROXY_ERROR, "address type"),
    ],
)
def test_socks5_failures(answers: list[bytes], kind: ProxyFailure, message: str) -> None:
    with pytest.raises(ProxyError, match=message) as caught:
        run(proxy.socks5("10.0.0.7", 8883), answers)
    assert caught.value.kind is kind


def test_socks5_wrong_password() -> None:
    with pytest.raises(ProxyError, match="rejected our user name or password") as caught:
        run(proxy.socks5("10.0.0.7", 8883, "monitor", "wrong"), [b"\x05\x02", b"\x01\x01"])
    assert caught.value.kind is ProxyFailure.PROXY_ERROR


def test_http_connect() -> None:
    sent = run(
        proxy.http_connect("::1", 8883, "monitor", "s3cret"), [b"HTTP/1.1 200 Connection established\r\n\r\n"]
    )
    lines = sent[0].decode().split("\r\n")
    assert lines[0] == "CONNECT [::1]:8883 HTTP/1.1" and "Host: [::1]:8883" in lines
    assert f"Proxy-Authorization: Basic {base64.b64encode(b'monitor:s3cret').decode()}" in lines


@pytest.mark.parametrize(
    ("head", "kind", "message"),
    [
        (b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", ProxyFailure.PROXY_ERROR, "credentials"),
        (b"HTTP/1.1 504 Gateway Timeout\r\n\r\n", ProxyFailure.TIMEOUT, "timed out"),
        (b"HTTP/1.1 403 Forbidden\r\n\r\n", ProxyFailure.PROXY_ERROR, "403 Forbidden"),
        (b"SSH-2.0-x\r\n\r\n", ProxyFailure.PROXY_ERROR, "not HTTP"),
    ],
)
def test_http_connect_failures(head: bytes, kind: ProxyFailure, message: str) -> None:
    with pytest.raises(ProxyError, match=message) as caught:
        run(proxy.http_connect("h", 1), [head])
    assert caught.value.kind is kind


def test_dialogue_follows_the_proxy_settings() -> None:
    socks = ProxySettings("socks5h", "p", 1080, "u", Secret("pw"))
    assert run(proxy.dialogue(socks, "h", 1), [b"\x05\x02", b"\x01\x00", b"\x05\x00\x00\x01", b"\x00" * 6])[
        1
    ] == (b"\x01\x01u\x02pw")
    http = ProxySettings("http", "p", 3128)
    assert run(proxy.dialogue(http, "h", 1), [b"HTTP/1.0 200 OK\r\n\r\n"])[0].startswith(b"CONNECT h:1 ")


def test_tunnel_blocking_over_a_socket_pair() -> None:
    """The blocking driver (used in the round trip's worker thread) reads exactly what it needs."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(2)
        theirs.sendall(b"HTTP/1.1 200 OK\r\nVia: test\r\n\r\nTLS BYTES")
        proxy.tunnel_blocking(ours, proxy.http_connect("h", 1))
        assert theirs.recv(100).startswith(b"CONNECT h:1 HTTP/1.1")
        assert ours.recv(100) == b"TLS BYTES"  # what follows the head is left for TLS


def test_tunnel_blocking_proxy_hangs_up() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.settimeout(2)
        theirs.sendall(b"\x05")
        theirs.shutdown(socket.SHUT_WR)  # half an answer, then EOF
        with pytest.raises(ProxyError, match="closed the connection"):
            proxy.tunnel_blocking(ours, proxy.socks5("10.0.0.1", 1))
