"""The certificates of a TLS 1.2 server's Certificate message, read from the raw bytes: pure.

For a certificate message OpenSSL refuses to take in ("excessive message size", over 100 KiB), the bytes
still arrived. Up to TLS 1.2 the server's first flight is plaintext: records of type handshake (22),
their payloads one stream of handshake messages, the Certificate message (type 11) a list of DER
certificates with 3-byte lengths. Anything malformed ends the reading with what was found.
"""

from __future__ import annotations

_HANDSHAKE_RECORD = 22
_CERTIFICATE = 11


def _handshake_stream(data: bytes) -> bytes:
    """The concatenated payloads of the leading handshake records."""
    stream = bytearray()
    offset = 0
    while offset + 5 <= len(data) and data[offset] == _HANDSHAKE_RECORD:
        length = int.from_bytes(data[offset + 3 : offset + 5], "big")
        stream += data[offset + 5 : offset + 5 + length]
        offset += 5 + length
    return bytes(stream)


def certificates_in_flight(data: bytes) -> tuple[bytes, ...]:
    """The DER certificates of the first Certificate message in ``data`` (a TLS 1.2 server's bytes)."""
    stream = _handshake_stream(data)
    offset = 0
    while offset + 4 <= len(stream):
        kind, length = stream[offset], int.from_bytes(stream[offset + 1 : offset + 4], "big")
        body = stream[offset + 4 : offset + 4 + length]
        if kind == _CERTIFICATE:
            return _certificate_list(body)
        offset += 4 + length
    return ()


def _certificate_list(body: bytes) -> tuple[bytes, ...]:
    found: list[bytes] = []
    end = min(len(body), 3 + int.from_bytes(body[:3], "big"))
    offset = 3
    while offset + 3 <= end:
        length = int.from_bytes(body[offset : offset + 3], "big")
        der = body[offset + 3 : offset + 3 + length]
        if len(der) < length:
            break  # cut short: keep the complete ones
        found.append(der)
        offset += 3 + length
    return tuple(found)
