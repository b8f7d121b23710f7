"""The probe's TCP protocol: reads give what arrived, at most what was asked, and end as the peer did."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire.connection import Connection
from mqtt_cert_exporter.probe.wire.tls import TlsSession
from tests.conftest import Lab


async def test_reads_keep_what_was_not_asked_for() -> None:
    connection = Connection()
    connection.data_received(b"HTTP/1.1 200 OK\r\n\r\n")
    connection.data_received(b"\x16\x03\x03")  # what follows a proxy's answer is not consumed with it
    assert await connection.read(4) == b"HTTP"
    assert await connection.readexactly(13) == b"/1.1 200 OK\r\n"
    assert await connection.read(65536) == b"\r\n\x16\x03\x03"


async def test_a_read_waits_for_data_then_sees_the_end() -> None:
    connection = Connection()
    waiting = asyncio.ensure_future(connection.read(100))
    await asyncio.sleep(0)
    assert not waiting.done()
    connection.data_received(b"abc")
    assert await waiting == b"abc"
    connection.eof_received()
    assert await connection.read(100) == b""
    with pytest.raises(asyncio.IncompleteReadError):
        await connection.readexactly(1)


async def test_a_reset_is_raised_once_the_data_before_it_was_read() -> None:
    connection = Connection()
    connection.data_received(b"last words")
    connection.connection_lost(ConnectionResetError("reset by peer"))
    assert await connection.read(100) == b"last words"
    with pytest.raises(ConnectionResetError):
        await connection.read(100)


async def test_a_read_waiting_at_the_deadline_times_out() -> None:
    connection = Connection()
    connection.expire_at(time.monotonic() + 0.05)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await connection.read(100)
    assert 0.04 <= time.monotonic() - started < 1.0


async def test_bytes_that_arrived_before_the_deadline_are_still_read() -> None:
    connection = Connection()
    connection.data_received(b"CONNACK")
    connection.expire_at(time.monotonic() - 1)  # already past
    await asyncio.sleep(0.01)
    assert await connection.read(100) == b"CONNACK"
    with pytest.raises(TimeoutError):
        await connection.read(100)


async def test_a_later_deadline_replaces_the_earlier_one() -> None:
    """The wait for the scheduler's slot moves a probe's deadline: the connection's moves with it."""
    connection = Connection()
    connection.expire_at(time.monotonic() + 0.02)
    connection.expire_at(time.monotonic() + 10)
    waiting = asyncio.ensure_future(connection.read(100))
    await asyncio.sleep(0.1)
    assert not waiting.done()
    connection.data_received(b"late but in time")
    assert await waiting == b"late but in time"


async def test_a_finished_probe_leaves_nothing_for_the_garbage_collector(lab: Lab) -> None:
    """Sessions and connections are freed when the probe ends (reference counting), not at the garbage
    collector's next full pass: with 10,000 brokers that pass takes ~150 ms and OpenSSL's buffers wait.
    (A connection's deadline timer, left running, would hold it until the deadline.)"""
    prober = Prober()
    await prober.probe(lab.broker("good"))  # caches warm
    gc.collect()
    gc.disable()
    try:
        for scenario in ("good", "expired", "closed", "garbage"):
            await prober.probe(lab.broker(scenario))
        await asyncio.sleep(0)  # the transports' connection_lost callbacks
        left = [type(o).__name__ for o in gc.get_objects() if isinstance(o, (TlsSession, Connection))]
    finally:
        gc.enable()
    assert left == []
