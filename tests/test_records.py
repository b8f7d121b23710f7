"""Certificates read from a TLS 1.2 server's raw first flight (wire.records), pure."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqtt_cert_exporter.probe.wire.records import certificates_in_flight


def _u24(value: int) -> bytes:
    return value.to_bytes(3, "big")


def _flight(certificates: list[bytes], record_size: int = 16384) -> bytes:
    server_hello = bytes([2]) + _u24(4) + b"\x03\x03\x00\x00"
    entries = b"".join(_u24(len(der)) + der for der in certificates)
    certificate = bytes([11]) + _u24(3 + len(entries)) + _u24(len(entries)) + entries
    stream = server_hello + certificate
    records = b""
    for start in range(0, len(stream), record_size):
        chunk = stream[start : start + record_size]
        records += bytes([22, 3, 3]) + len(chunk).to_bytes(2, "big") + chunk
    return records


def test_the_certificates_come_out_across_records() -> None:
    certificates = [b"\x30" * 150_000, b"\x30\x82 intermediate"]
    assert certificates_in_flight(_flight(certificates)) == tuple(certificates)


def test_a_cut_flight_gives_the_complete_certificates_only() -> None:
    flight = _flight([b"leaf" * 10, b"intermediate" * 1000])
    assert certificates_in_flight(flight[:200]) == (b"leaf" * 10,)
    assert certificates_in_flight(b"\x15\x03\x03\x00\x02\x02\x28") == ()  # an alert, no handshake


@given(st.binary(max_size=2000))
def test_any_bytes_give_a_tuple(data: bytes) -> None:
    assert isinstance(certificates_in_flight(data), tuple)
