"""From an exception to the ``Failure`` a probe reports: one table per phase, first match wins.

Both connections of a probe (the verifying one, and the non-verifying one that asks whether the broker
still speaks MQTT when the chain is untrusted) read the same tables, so the same error is reported the
same way whichever connection met it. Pure.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from dataclasses import dataclass

from mqtt_cert_exporter.probe.wire.mqtt import PacketError
from mqtt_cert_exporter.probe.wire.proxy import ProxyError
from mqtt_cert_exporter.probe.wire.tls import (
    ClientCertificateRequired,
    TlsCertificateTooLarge,
    TlsClosed,
    TlsHandshakeFailure,
    TlsProtocolError,
)
from mqtt_cert_exporter.probe.wire.websocket import UpgradeRejected, WebSocketProtocolError
from mqtt_cert_exporter.results import Failure, Reason, Stage

#: (the exception, where it happened: a host:port, a proxy, a path) -> the failure's detail
Detail = Callable[[BaseException, str], str]


@dataclass(frozen=True, slots=True)
class Rule:
    catches: type[BaseException] | tuple[type[BaseException], ...]
    stage: Stage
    reason: Reason | Callable[[BaseException], Reason]
    detail: Detail
    #: a further condition on the exception (an errno)
    when: Callable[[BaseException], bool] | None = None


class FailureTable:
    """The rules of one phase. ``catches`` is what a phase's ``except`` clause names."""

    def __init__(self, *rules: Rule) -> None:
        self.rules = rules
        caught: list[type[BaseException]] = []
        for rule in rules:
            caught.extend(rule.catches if isinstance(rule.catches, tuple) else (rule.catches,))
        self.catches: tuple[type[BaseException], ...] = tuple(dict.fromkeys(caught))

    def failure(self, exc: BaseException, where: str = "") -> Failure:
        for rule in self.rules:
            if isinstance(exc, rule.catches) and (rule.when is None or rule.when(exc)):
                reason = rule.reason if isinstance(rule.reason, Reason) else rule.reason(exc)
                return Failure(rule.stage, reason, rule.detail(exc, where))
        raise exc  # not in the table: a bug, reported as such by the scheduler


def _text(exc: BaseException, where: str) -> str:
    return str(exc)


def _strerror(exc: BaseException) -> str:
    return (exc.strerror if isinstance(exc, OSError) else None) or str(exc)


#: A broker that wants a client certificate says so during the handshake, or (TLS 1.3) at the first
#: read after it: whichever phase reads first meets it.
CLIENT_CERTIFICATE = Rule(ClientCertificateRequired, Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED, _text)

RESOLVE = FailureTable(
    Rule(TimeoutError, Stage.RESOLVE, Reason.DNS_ERROR, lambda exc, host: f"resolving {host} timed out"),
    # socket.gaierror is an OSError
    Rule(
        (OSError, UnicodeError),
        Stage.RESOLVE,
        Reason.DNS_ERROR,
        lambda e, host: f"cannot resolve {host}: {e}",
    ),
)

#: ``where``: the hop, "host:port" or "proxy URL"
CONNECT = FailureTable(
    Rule(TimeoutError, Stage.CONNECT, Reason.TIMEOUT, lambda exc, hop: f"TCP connect to {hop} timed out"),
    # only a proxy is reached by name here
    Rule(socket.gaierror, Stage.CONNECT, Reason.PROXY_ERROR, lambda exc, hop: f"cannot resolve {hop}: {exc}"),
    Rule(
        ConnectionRefusedError, Stage.CONNECT, Reason.REFUSED, lambda exc, hop: f"connection to {hop} refused"
    ),
    Rule(ConnectionResetError, Stage.CONNECT, Reason.RESET, lambda exc, hop: f"connection to {hop} reset"),
    Rule(
        OSError,
        Stage.CONNECT,
        Reason.TIMEOUT,
        lambda exc, hop: f"cannot connect to {hop}: {_strerror(exc)}",
        when=lambda exc: isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT,
    ),
    Rule(
        OSError,
        Stage.CONNECT,
        Reason.UNREACHABLE,
        lambda exc, hop: f"cannot connect to {hop}: {_strerror(exc)}",
    ),
)


def _proxy_reason(exc: BaseException) -> Reason:
    assert isinstance(exc, ProxyError)
    return Reason(exc.kind.value)  # ProxyFailure's values are connect reasons


#: ``where``: "proxy URL -> host:port"
TUNNEL = FailureTable(
    Rule(TimeoutError, Stage.CONNECT, Reason.TIMEOUT, lambda exc, hops: f"{hops}: no tunnel opened in time"),
    Rule(ProxyError, Stage.CONNECT, _proxy_reason, lambda exc, hops: f"{hops}: {exc}"),
    Rule(OSError, Stage.CONNECT, Reason.PROXY_ERROR, lambda exc, hops: f"{hops}: {exc}"),
)

TLS_HANDSHAKE = FailureTable(
    Rule(TimeoutError, Stage.TLS, Reason.TIMEOUT, lambda exc, where: "TLS handshake timed out"),
    Rule(TlsCertificateTooLarge, Stage.TLS, Reason.CERTIFICATE_TOO_LARGE, _text),
    Rule(TlsProtocolError, Stage.TLS, Reason.PROTOCOL_ERROR, _text),
    Rule(TlsHandshakeFailure, Stage.TLS, Reason.HANDSHAKE_FAILURE, _text),
    CLIENT_CERTIFICATE,
    # ssl.SSLError is an OSError
    Rule(OSError, Stage.TLS, Reason.HANDSHAKE_FAILURE, lambda exc, where: f"TLS handshake: {exc}"),
)

#: ``where``: the upgrade's path
WEBSOCKET_UPGRADE = FailureTable(
    Rule(
        TimeoutError,
        Stage.WEBSOCKET,
        Reason.TIMEOUT,
        lambda exc, path: "no answer to the WebSocket upgrade before the deadline",
    ),
    Rule(UpgradeRejected, Stage.WEBSOCKET, Reason.UPGRADE_REJECTED, lambda exc, path: f"{exc} (path {path})"),
    Rule(
        WebSocketProtocolError,
        Stage.WEBSOCKET,
        Reason.PROTOCOL_ERROR,
        lambda e, path: f"WebSocket upgrade: {e}",
    ),
    CLIENT_CERTIFICATE,
    Rule(
        (EOFError, TlsClosed, OSError),
        Stage.WEBSOCKET,
        Reason.CLOSED,
        lambda exc, path: f"connection closed during the WebSocket upgrade: {exc}",
    ),
)

CONNACK = FailureTable(
    Rule(TimeoutError, Stage.MQTT, Reason.TIMEOUT, lambda exc, where: "no CONNACK before the deadline"),
    Rule(PacketError, Stage.MQTT, Reason.PROTOCOL_ERROR, lambda exc, where: f"invalid CONNACK: {exc}"),
    CLIENT_CERTIFICATE,
    Rule(
        WebSocketProtocolError, Stage.WEBSOCKET, Reason.PROTOCOL_ERROR, lambda e, w: f"WebSocket frames: {e}"
    ),
    Rule(
        (EOFError, TlsClosed, OSError),
        Stage.MQTT,
        Reason.CLOSED,
        lambda exc, where: str(exc) or "connection closed before CONNACK",
    ),
)


def websocket_closed(code: int | None, reason: str) -> Failure:
    """wss: the broker answered CONNECT with a close frame (RabbitMQ: 1002 "unauthenticated")."""
    status = "no status code" if code is None else f"status {code}"
    why = f', reason "{reason}"' if reason else ", no reason given"
    detail = f"the broker closed the WebSocket instead of answering CONNECT ({status}{why})"
    return Failure(Stage.MQTT, Reason.WEBSOCKET_CLOSED, detail)
