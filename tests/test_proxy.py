"""Proxies (SOCKS5, HTTP CONNECT, issue 8). First the dialogues, driven with canned answers: no sockets.
Then probes through proxies written here (``LoopbackProxy``) on real sockets, to the lab's Mosquitto
and the transport lab's (its ACL and secure WebSocket listeners, with the round trip): slow.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import socket
from dataclasses import dataclass, field

import pytest

from mqtt_cert_exporter.config import BrokerConfig, ProxyScheme, ProxySettings, Secret, Target
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire import proxy
from mqtt_cert_exporter.probe.wire.proxy import ProxyError, ProxyFailure, ReadExactly, ReadHead, Send
from tests.conftest import Lab
from tests.lab.transport import Transport, failure_of, serving, with_roundtrip

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


# --------------------------------------------------------------------------------------------------
# Probes through proxies on real sockets


async def no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must be resolved by the proxy, not by us")


@dataclass
class LoopbackProxy:
    """A SOCKS5 or HTTP CONNECT proxy on loopback, with optional credentials, for real sockets."""

    kind: str  # "socks5" or "http"
    username: str | None = None
    password: str | None = None
    names: dict[str, str] = field(default_factory=lambda: {"mqtt.proxied.test": "127.0.0.1"})
    targets: list[str] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = await (self._socks5(reader, writer) if self.kind == "socks5" else self._http(reader, writer))
        if target is None:
            return
        host, port = target
        self.targets.append(f"{host}:{port}")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.names.get(host, host), port)
        except OSError:
            await self._refused(writer)
            return
        await self._granted(writer)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    async def _socks5(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        _, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        wanted = 0x02 if self.username else 0x00
        if wanted not in methods:
            writer.write(b"\x05\xff")
            return None
        writer.write(bytes([5, wanted]))
        if self.username:
            _, length = await reader.readexactly(2)
            user = (await reader.readexactly(length)).decode()
            (length,) = await reader.readexactly(1)
            password = (await reader.readexactly(length)).decode()
            if (user, password) != (self.username, self.password):
                writer.write(b"\x01\x01")
                return None
            writer.write(b"\x01\x00")
        _, command, _, kind = await reader.readexactly(4)
        assert command == 1
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        return host, port

    async def _http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        method, authority, _ = head.split("\r\n")[0].split(" ")
        assert method == "CONNECT"
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if f"Proxy-Authorization: Basic {token}\r\n" not in head:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
                )
                return None
        host, _, port = authority.rpartition(":")
        return host.strip("[]"), int(port)

    async def _refused(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"\x05\x05\x00\x01" + bytes(6) if self.kind == "socks5" else b"HTTP/1.1 502 Bad Gateway\r\n\r\n"
        )
        await writer.drain()

    async def _granted(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"\x05\x00\x00\x01" + bytes(6)
            if self.kind == "socks5"
            else b"HTTP/1.1 200 Connection established\r\n\r\n"
        )
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()


def through(
    broker: BrokerConfig, url_scheme: ProxyScheme, port: int, user: str | None = None, pw: str | None = None
) -> BrokerConfig:
    proxy = ProxySettings(url_scheme, "127.0.0.1", port, user, Secret(pw) if pw is not None else None)
    return dataclasses.replace(broker, proxy=proxy)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "scheme"), [("socks5", "socks5"), ("socks5", "socks5h"), ("http", "http")])
async def test_probe_through_a_proxy(lab: Lab, kind: ProxyScheme, scheme: ProxyScheme) -> None:
    proxy = LoopbackProxy(kind)
    broker = lab.broker("good", mqtt={"protocol": "5"})
    async with serving(proxy, None) as port:
        result = await Prober(resolver=no_resolver).probe(through(broker, scheme, port))
    assert result.failure is None, result.failure
    assert proxy.targets == [f"127.0.0.1:{broker.target.port}"]
    assert result.tls is not None and result.tls.verdict.trusted


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "scheme"), [("socks5", "socks5h"), ("http", "http")])
async def test_the_proxy_resolves_the_name(
    transport: Transport, kind: ProxyScheme, scheme: ProxyScheme
) -> None:
    proxy = LoopbackProxy(kind)
    broker = dataclasses.replace(
        transport.broker("t8_acl"),
        target=Target("mqtt.proxied.test", transport.mosquitto.port("t8_acl")),
    )
    async with serving(proxy, None) as port:
        result = await Prober(resolver=no_resolver).probe(through(broker, scheme, port))
    assert result.failure is None, result.failure
    assert proxy.targets == [f"mqtt.proxied.test:{broker.target.port}"]
    assert result.ip == ""  # only the proxy knows
    assert "resolve" not in [phase.value for phase, _ in result.durations]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["socks5", "http"])
async def test_proxy_credentials(lab: Lab, kind: ProxyScheme) -> None:
    proxy = LoopbackProxy(kind, username="monitor", password="pr0xy-pw")
    async with serving(proxy, None) as port:
        good = await Prober().probe(through(lab.broker("good"), kind, port, "monitor", "pr0xy-pw"))
        wrong = await Prober().probe(through(lab.broker("good"), kind, port, "monitor", "wrong"))
        missing = await Prober().probe(through(lab.broker("good"), kind, port))
    assert good.failure is None, good.failure
    for result in (wrong, missing):
        assert failure_of(result) == ("connect", "proxy_error")
        assert result.failure is not None and "pr0xy-pw" not in result.failure.detail


@pytest.mark.slow
async def test_proxy_reports_the_broker_refused(lab: Lab) -> None:
    proxy = LoopbackProxy("socks5")
    async with serving(proxy, None) as port:
        result = await Prober().probe(through(lab.broker("closed"), "socks5", port))
    assert failure_of(result) == ("connect", "refused")
    assert result.failure is not None and "SOCKS5" in result.failure.detail


@pytest.mark.slow
async def test_proxy_down(lab: Lab) -> None:
    closed_port = lab.brokers["closed"].target.port
    result = await Prober().probe(through(lab.broker("good"), "socks5", closed_port))
    assert failure_of(result) == ("connect", "refused")
    assert result.failure is not None and "proxy socks5://127.0.0.1" in result.failure.detail


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["socks5", "http"])
async def test_roundtrip_and_wss_through_a_proxy(transport: Transport, kind: ProxyScheme) -> None:
    proxy = LoopbackProxy(kind, username="monitor", password="pw")
    async with serving(proxy, None) as port:
        mqtts = with_roundtrip(
            through(transport.broker("t8_acl"), kind, port, "monitor", "pw"), "probe/allowed"
        )
        wss = with_roundtrip(
            through(transport.broker("t8_wss_acl", wss=True), kind, port, "monitor", "pw"), "probe/allowed"
        )
        results = [await Prober().probe(mqtts), await Prober().probe(wss)]
    for result in results:
        assert result.failure is None, result.failure
        assert result.roundtrip is not None and result.roundtrip.success
    # Each probe: the CONNECT/CONNACK connection and the round trip's (paho, in its thread), both proxied.
    assert len(proxy.targets) == 4
