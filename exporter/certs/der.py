"""Where a field sits in a certificate's DER, for what cryptography only hands out as new Python objects.

A fleet's leaves share their issuer: its name, found here as bytes, keys what was made of it once
(``parse``). Pure; only for DER that cryptography already loaded (strict DER), and still every tag on
the way is checked: anything else answers None.
"""

from __future__ import annotations

SEQUENCE = 0x30
INTEGER = 0x02
#: tbsCertificate's ``version [0] EXPLICIT``, absent in version 1 certificates
VERSION = 0xA0


def issuer_name(der: bytes) -> bytes | None:
    """The issuer Name as encoded in the certificate (Certificate -> tbsCertificate -> [version],
    serialNumber, signature, issuer), tag and length included; None if the DER is not shaped so."""
    try:
        at = _into(der, 0, SEQUENCE)  # Certificate
        at = _into(der, at, SEQUENCE)  # tbsCertificate
        if der[at] == VERSION:
            at = _over(der, at, VERSION)
        at = _over(der, at, INTEGER)  # serialNumber
        at = _over(der, at, SEQUENCE)  # signature AlgorithmIdentifier
        end = _over(der, at, SEQUENCE)
    except (IndexError, ValueError):
        return None
    return der[at:end] if end <= len(der) else None


def _header(der: bytes, at: int, tag: int) -> tuple[int, int]:
    """(where the content of the element at ``at`` starts, its length), checking its tag."""
    if der[at] != tag:
        raise ValueError(f"tag {der[at]:#x} at {at}, not {tag:#x}")
    length = der[at + 1]
    if length < 0x80:
        return at + 2, length
    count = length & 0x7F
    if not 0 < count <= 4 or at + 2 + count > len(der):
        raise ValueError(f"length of {count} bytes at {at}")
    return at + 2 + count, int.from_bytes(der[at + 2 : at + 2 + count], "big")


def _into(der: bytes, at: int, tag: int) -> int:
    return _header(der, at, tag)[0]


def _over(der: bytes, at: int, tag: int) -> int:
    start, length = _header(der, at, tag)
    return start + length
