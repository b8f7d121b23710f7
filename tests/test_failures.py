"""The tables from exception to Failure: one per phase, shared by both connections of a probe."""

from __future__ import annotations

import errno
import ssl

import pytest

from mqtt_cert_exporter.probe import failures
from mqtt_cert_exporter.probe.wire.proxy import ProxyError, ProxyFailure
from mqtt_cert_exporter.probe.wire.tls import ClientCertificateRequired, TlsHandshakeFailure, TlsProtocolError
from mqtt_cert_exporter.results import REASONS_BY_STAGE, Reason, Stage

TABLES = {
    "resolve": failures.RESOLVE,
    "connect": failures.CONNECT,
    "tunnel": failures.TUNNEL,
    "tls": failures.TLS_HANDSHAKE,
    "websocket": failures.WEBSOCKET_UPGRADE,
    "connack": failures.CONNACK,
}


@pytest.mark.parametrize("name", TABLES)
def test_every_rule_reports_a_documented_reason(name: str) -> None:
    for rule in TABLES[name].rules:
        reasons = (
            [rule.reason] if isinstance(rule.reason, Reason) else [Reason(k.value) for k in ProxyFailure]
        )
        for reason in reasons:
            assert reason in REASONS_BY_STAGE[rule.stage], (name, rule)


@pytest.mark.parametrize("name", ["tls", "websocket", "connack"])
def test_a_missing_client_certificate_reads_the_same_in_every_phase(name: str) -> None:
    failure = TABLES[name].failure(ClientCertificateRequired("certificate required"))
    assert (failure.stage, failure.reason) == (Stage.TLS, Reason.CLIENT_CERTIFICATE_REQUIRED)


def test_tls_errors_keep_their_kind() -> None:
    """Both connections read this table: a protocol error on the non-verifying connection used to be
    reported as handshake_failure."""
    table = failures.TLS_HANDSHAKE
    assert table.failure(TlsProtocolError("wrong version number")).reason is Reason.PROTOCOL_ERROR
    assert table.failure(TlsHandshakeFailure("alert")).reason is Reason.HANDSHAKE_FAILURE
    assert table.failure(ssl.SSLError(1, "bad")).reason is Reason.HANDSHAKE_FAILURE
    assert table.failure(TimeoutError()).reason is Reason.TIMEOUT


def test_connect_errors_first_match_wins() -> None:
    table = failures.CONNECT
    assert table.failure(ConnectionRefusedError(), "h:1").detail == "connection to h:1 refused"
    assert table.failure(OSError(errno.ETIMEDOUT, "timed out"), "h:1").reason is Reason.TIMEOUT
    assert table.failure(OSError(errno.EHOSTUNREACH, "no route"), "h:1").reason is Reason.UNREACHABLE
    assert failures.TUNNEL.failure(ProxyError(ProxyFailure.REFUSED, "no"), "p").reason is Reason.REFUSED


def test_an_exception_outside_the_table_is_not_hidden() -> None:
    with pytest.raises(KeyError):
        failures.CONNACK.failure(KeyError("bug"))
