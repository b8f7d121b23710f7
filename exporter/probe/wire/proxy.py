"""Reaching a broker through a proxy: SOCKS5 (RFC 1928, RFC 1929 user/password) and HTTP CONNECT.

The protocols are written once, without I/O, as *dialogues*: generators that yield what to send and
what to read, and receive what was read. Two small drivers run them: ``tunnel`` over asyncio streams
(the probe) and ``tunnel_blocking`` over a socket (the round trip's MQTT client runs in a thread).
Unit tests drive the dialogues directly with canned answers.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import struct
from collections.abc import Generator
from dataclasses import dataclass
from enum import StrEnum

from mqtt_cert_exporter.config import ProxySettings
from mqtt_cert_exporter.probe.wire.connection import Connection
from mqtt_cert_exporter.probe.wire.http1 import HttpError, head_length, parse_response_head


class ProxyFailure(StrEnum):
    """How a tunnel failed; the probe maps these onto its ``connect`` reasons."""

    REFUSED = "refused"  # the proxy reached the host; nothing listens on the port
    UNREACHABLE = "unreachable"  # the proxy has no route to the host
    TIMEOUT = "timeout"  # the proxy's own connect timed out
    PROXY_ERROR = "proxy_error"  # authentication, policy, or an answer that is not the protocol


class ProxyError(Exception):
    def __init__(self, kind: ProxyFailure, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Send:
    data: bytes


@dataclass(frozen=True, slots=True)
class ReadExactly:
    count: int


@dataclass(frozen=True, slots=True)
class ReadHead:
    """Read an HTTP response head (up to and including the blank line), at most ``MAX_HEAD`` bytes."""


Step = Send | ReadExactly | ReadHead
Dialogue = Generator[Step, bytes, None]

SOCKS_VERSION = 5
_NO_AUTH, _USER_PASSWORD, _NO_ACCEPTABLE = 0x00, 0x02, 0xFF
_CONNECT = 0x01
_IPV4, _DOMAIN, _IPV6 = 0x01, 0x03, 0x04

#: SOCKS5 reply codes (RFC 1928 §6) -> what they mean for the probe.
SOCKS_REPLIES: dict[int, tuple[ProxyFailure, str]] = {
    0x01: (ProxyFailure.PROXY_ERROR, "general SOCKS server failure"),
    0x02: (ProxyFailure.PROXY_ERROR, "connection not allowed by ruleset"),
    0x03: (ProxyFailure.UNREACHABLE, "network unreachable"),
    0x04: (ProxyFailure.UNREACHABLE, "host unreachable"),
    0x05: (ProxyFailure.REFUSED, "connection refused"),
    0x06: (ProxyFailure.TIMEOUT, "TTL expired"),
    0x07: (ProxyFailure.PROXY_ERROR, "command not supported"),
    0x08: (ProxyFailure.PROXY_ERROR, "address type not supported"),
}


def dialogue(proxy: ProxySettings, host: str, port: int) -> Dialogue:
    """The dialogue that asks ``proxy`` for a tunnel to ``host:port`` (an IP, or a name it resolves)."""
    password = proxy.password.reveal() if proxy.password else None
    if proxy.scheme == "http":
        return http_connect(host, port, proxy.username, password)
    return socks5(host, port, proxy.username, password)


def _socks_address(host: str) -> bytes:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raw = host.encode("idna")
        if not 1 <= len(raw) <= 255:
            raise ProxyError(ProxyFailure.PROXY_ERROR, "host name too long for SOCKS5") from None
        return bytes([_DOMAIN, len(raw)]) + raw
    return bytes([_IPV4 if address.version == 4 else _IPV6]) + address.packed


def socks5(host: str, port: int, username: str | None = None, password: str | None = None) -> Dialogue:
    methods = bytes([_NO_AUTH, _USER_PASSWORD]) if username is not None else bytes([_NO_AUTH])
    yield Send(bytes([SOCKS_VERSION, len(methods)]) + methods)
    version, method = yield ReadExactly(2)
    if version != SOCKS_VERSION:
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"not a SOCKS5 proxy (it answered version {version})")
    if method == _NO_ACCEPTABLE:
        what = "our user name and password" if username is not None else "connections without credentials"
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"the SOCKS5 proxy does not accept {what}")
    yield from _socks5_authenticate(method, username, password)
    yield Send(bytes([SOCKS_VERSION, _CONNECT, 0x00]) + _socks_address(host) + struct.pack("!H", port))
    version, reply, _, kind = yield ReadExactly(4)
    if version != SOCKS_VERSION:
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"malformed SOCKS5 reply (version {version})")
    if reply != 0:
        failure, text = SOCKS_REPLIES.get(reply, (ProxyFailure.PROXY_ERROR, f"unknown reply 0x{reply:02x}"))
        raise ProxyError(failure, f"the SOCKS5 proxy could not connect: {text}")
    yield from _socks5_bound_address(kind)


def _socks5_authenticate(method: int, username: str | None, password: str | None) -> Dialogue:
    """The sub-negotiation of the method the proxy chose (RFC 1929 user/password, or none)."""
    if method == _NO_AUTH:
        return
    if method != _USER_PASSWORD:
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"the SOCKS5 proxy chose unknown method 0x{method:02x}")
    if username is None:
        raise ProxyError(
            ProxyFailure.PROXY_ERROR, "the SOCKS5 proxy chose an authentication we did not offer"
        )
    user, secret = username.encode(), (password or "").encode()
    yield Send(bytes([0x01, len(user)]) + user + bytes([len(secret)]) + secret)
    _, status = yield ReadExactly(2)
    if status != 0:
        raise ProxyError(ProxyFailure.PROXY_ERROR, "the SOCKS5 proxy rejected our user name or password")


def _socks5_bound_address(kind: int) -> Dialogue:
    """Read past the address the proxy bound (we have no use for it)."""
    if kind == _IPV4:
        yield ReadExactly(4 + 2)
    elif kind == _IPV6:
        yield ReadExactly(16 + 2)
    elif kind == _DOMAIN:
        (length,) = yield ReadExactly(1)
        yield ReadExactly(length + 2)
    else:
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"malformed SOCKS5 reply (address type {kind})")


def http_connect(host: str, port: int, username: str | None = None, password: str | None = None) -> Dialogue:
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if username is not None:
        token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
        lines.append(f"Proxy-Authorization: Basic {token}")
    yield Send(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = yield ReadHead()
    try:
        response = parse_response_head(head)
    except HttpError as exc:
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"the HTTP proxy's answer is not HTTP: {exc}") from None
    if 200 <= response.status < 300:
        return
    what = f"HTTP {response.status} {response.reason}".rstrip()
    if response.status == 407:
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"the HTTP proxy wants (other) credentials: {what}")
    if response.status == 504:
        raise ProxyError(ProxyFailure.TIMEOUT, f"the HTTP proxy timed out connecting: {what}")
    raise ProxyError(ProxyFailure.PROXY_ERROR, f"the HTTP proxy refused the tunnel: {what}")


# -- drivers ------------------------------------------------------------------------------------


async def tunnel(connection: Connection, steps: Dialogue) -> None:
    """Run a dialogue over an open connection to the proxy. The caller bounds it with a timeout."""
    answer = b""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                connection.write(step.data)
                answer = b""
            elif isinstance(step, ReadExactly):
                answer = await connection.readexactly(step.count)
            else:
                answer = await _read_head(connection)
            step = steps.send(answer)
    except StopIteration:
        return
    except asyncio.IncompleteReadError:
        raise ProxyError(ProxyFailure.PROXY_ERROR, "the proxy closed the connection mid-dialogue") from None


async def _read_head(connection: Connection) -> bytes:
    head = b""
    while (length := _head_length(head)) is None:
        byte = await connection.read(1)  # byte by byte: never consume what follows the head
        if not byte:
            raise ProxyError(ProxyFailure.PROXY_ERROR, "the proxy closed the connection mid-dialogue")
        head += byte
    return head[:length]


def tunnel_blocking(sock: socket.socket, steps: Dialogue) -> None:
    """Run a dialogue over a blocking socket (whose timeout bounds every wait)."""
    answer = b""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                sock.sendall(step.data)
                answer = b""
            elif isinstance(step, ReadExactly):
                answer = _recv_exactly(sock, step.count)
            else:
                answer = b""
                while _head_length(answer) is None:
                    answer += _recv_exactly(sock, 1)
            step = steps.send(answer)
    except StopIteration:
        return


def _recv_exactly(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ProxyError(ProxyFailure.PROXY_ERROR, "the proxy closed the connection mid-dialogue")
        data += chunk
    return data


def _head_length(buffer: bytes) -> int | None:
    try:
        return head_length(buffer)
    except HttpError as exc:
        raise ProxyError(ProxyFailure.PROXY_ERROR, f"the HTTP proxy's answer is not HTTP: {exc}") from None
