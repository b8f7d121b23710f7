"""Fix texts tailored to the broker's kind (``broker_kind``): pure text in, text out.

The fixes of ``exporter.report`` and the lints are worded for Mosquitto, the broker most deployments
run and the one the lab runs. For any other kind -- and for a broker whose kind is not known -- each
Mosquitto-only instruction is replaced by the instruction for that kind (or by every kind's, labelled),
from the table in ``exporter.report.brokerkinds``. Every Mosquitto-only fragment the fixes use is listed here;
tests check that no fix handed to another kind still names Mosquitto's settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mqtt_cert_exporter.report.brokerkinds import BrokerKind, Topic, specifics

_Replacement = Callable[[re.Match[str]], str]


def _topic(topic: Topic, template: str = " ({})") -> Callable[[str], _Replacement]:
    def for_kind(kind: str) -> _Replacement:
        text = template.format(specifics(topic, kind))
        return lambda _match: text

    return for_kind


def _websocket_path(kind: str) -> _Replacement:
    path = "/ws" if kind == BrokerKind.RABBITMQ else "/mqtt"
    return lambda match: f"{match.group(1)}{path}"


#: (a Mosquitto-only fragment of a fix, what replaces it for a given kind)
_FRAGMENTS: tuple[tuple[re.Pattern[str], Callable[[str], _Replacement]], ...] = (
    (re.compile(r" \(Mosquitto: SIGHUP(; WebSocket listeners need a restart)?\)"), _topic(Topic.RELOAD)),
    (re.compile(r"certfile = leaf followed by intermediates; "), _topic(Topic.SERVE_CHAIN, "{}; ")),
    (re.compile(r" \(mosquitto\.conf: listener \d+\)"), _topic(Topic.LISTENER)),
    (re.compile(r" \(Mosquitto: max_connections\)"), lambda kind: lambda _m: ""),
    (
        re.compile(r" \(Mosquitto: tls_version/ciphers of the listener; "),
        _topic(Topic.TLS_VERSIONS, " ({}; "),
    ),
    (re.compile(r" \(Mosquitto: protocol websockets\)"), _topic(Topic.WEBSOCKET)),
    (re.compile(r"(wss://[^\s/)]+)/mqtt"), _websocket_path),
    (re.compile(r"\(often /mqtt\)"), _topic(Topic.WEBSOCKET, "({})")),
    (
        re.compile(
            r" \(Mosquitto: require_certificate true( \+ cafile| means every client must present a "
            r"certificate issued by a CA in the listener's cafile, or the handshake is aborted)\)"
        ),
        _topic(Topic.CLIENT_CERTIFICATE),
    ),
    (
        re.compile(r"; or set require_certificate false if"),
        lambda kind: lambda _m: "; or stop requiring one if",
    ),
    (re.compile(r" \(Mosquitto: allow_anonymous false\)"), lambda kind: lambda _m: ""),
    (
        re.compile(
            r"that user's entry in its password_file \(mosquitto_passwd\) and its ACL \(Mosquitto answers "
            r"'not authorized' to a wrong password too\)"
        ),
        _topic(Topic.CREDENTIALS, "that user and what it may do ({})"),
    ),
    (re.compile(r"; leave it out of the broker's certfile"), _topic(Topic.ROOT_INCLUDED, "; {}")),
    (re.compile(r"; Mosquitto: tls_version tlsv1\.2 on the listener"), _topic(Topic.TLS_VERSIONS, "; {}")),
    (re.compile(r" \(mosquitto\.conf\)"), lambda kind: lambda _m: ""),
)

#: What a fix for a broker that is not Mosquitto must never say
MOSQUITTO_ONLY = re.compile(
    r"Mosquitto: |mosquitto\.conf|mosquitto_passwd|require_certificate|tls_version|allow_anonymous|"
    r"max_connections|SIGHUP|protocol websockets"
)


def tailor(fix: str, kind: str) -> str:
    """``fix`` as it applies to a broker of ``kind`` ("" when not known)."""
    if kind == BrokerKind.MOSQUITTO:
        return fix
    for pattern, replacement in _FRAGMENTS:
        fix = pattern.sub(replacement(kind), fix)
    return fix
