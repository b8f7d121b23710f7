"""What a CONNACK's return code (MQTT 3.1.1) or reason code (MQTT 5) means, and why a broker refused.

A pure table, no I/O: the probe names the code it received, the report words the fix from the cause.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

PROTOCOL_5 = "5"
PROTOCOL_311 = "3.1.1"
#: ``mqtt.protocol: auto``: learn what the broker speaks (see ``probe.negotiation``)
PROTOCOL_AUTO = "auto"
#: The codes that mean "I do not speak the version you sent", per table
UNSUPPORTED_VERSION_CODES: Mapping[str, int] = {PROTOCOL_311: 1, PROTOCOL_5: 0x84}

CONNACK_MEANINGS_311: Mapping[int, str] = {
    0: "connection accepted",
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}

CONNACK_MEANINGS_5: Mapping[int, str] = {
    0x00: "success",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8C: "bad authentication method",
    0x90: "topic name invalid",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9F: "connection rate exceeded",
}


def connack_meaning(protocol: str, code: int) -> str:
    table = CONNACK_MEANINGS_5 if protocol == PROTOCOL_5 else CONNACK_MEANINGS_311
    return table.get(code, f"unknown code {code}")


class RefusalCause(StrEnum):
    """Why a broker refused the connection, as far as its code tells; one fix per cause."""

    CREDENTIALS = "credentials"
    PROTOCOL_VERSION = "protocol_version"
    CLIENT_ID = "client_id"
    BUSY = "busy"
    BANNED = "banned"
    MOVED = "moved"


_REFUSAL_CAUSES: Mapping[str, Mapping[int, RefusalCause]] = {
    PROTOCOL_311: {
        1: RefusalCause.PROTOCOL_VERSION,
        2: RefusalCause.CLIENT_ID,
        3: RefusalCause.BUSY,
        4: RefusalCause.CREDENTIALS,
        5: RefusalCause.CREDENTIALS,
    },
    PROTOCOL_5: {
        0x84: RefusalCause.PROTOCOL_VERSION,
        0x85: RefusalCause.CLIENT_ID,
        0x86: RefusalCause.CREDENTIALS,
        0x87: RefusalCause.CREDENTIALS,
        0x88: RefusalCause.BUSY,
        0x89: RefusalCause.BUSY,
        0x8A: RefusalCause.BANNED,
        0x8C: RefusalCause.CREDENTIALS,
        0x97: RefusalCause.BUSY,
        0x9C: RefusalCause.MOVED,
        0x9D: RefusalCause.MOVED,
        0x9F: RefusalCause.BUSY,
    },
}


def refusal_cause(protocol: str, code: int) -> RefusalCause | None:
    """None when the code names no cause we have a fix for (or is not a refusal)."""
    return _REFUSAL_CAUSES.get(protocol, {}).get(code)
