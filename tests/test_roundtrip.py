"""The round trip (issue 8): a message published and received back (aiomqtt, paho in its thread), against
real servers on loopback:

* the transport lab's Mosquitto listener with an ACL (allowed and denied topics; MQTT 5 and 3.1.1, over
  TCP and over secure WebSockets) and the lab's Mosquitto (an expired certificate, a wrong password);
* a scripted WebSocket server that answers the probe's CONNECT and never the round trip's, for the
  deadlines that must leave nothing behind.

Through SOCKS5 and HTTP CONNECT proxies: tests/test_proxy.py; in the exporter process:
tests/test_transport.py.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire import websocket as ws
from tests.conftest import Lab
from tests.lab.scrape import label_sets, samples, value
from tests.lab.transport import (
    V5,
    Transport,
    exposition,
    failure_of,
    read_client_frame,
    server_context,
    serving,
    with_roundtrip,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("protocol", "qos"), [("5", 1), ("3.1.1", 1), ("5", 0)])
async def test_roundtrip_on_an_allowed_topic(transport: Transport, protocol: str, qos: int) -> None:
    broker = with_roundtrip(transport.broker("t8_acl"), "probe/allowed", qos=qos, protocol=protocol)
    result = await Prober().probe(broker)
    assert result.failure is None, result.failure
    assert (
        result.roundtrip is not None
        and result.roundtrip.success
        and not result.roundtrip.unverified_connection
    )
    assert result.roundtrip.latency is not None and 0 < result.roundtrip.latency < 3
    assert [phase.value for phase, _ in result.durations][-2:] == ["roundtrip", "total"]
    found = samples(exposition([result]))
    assert value(found, "mqtt_broker_roundtrip_success", broker="t8_acl") == 1
    assert value(found, "mqtt_broker_roundtrip_duration_seconds", broker="t8_acl") == result.roundtrip.latency
    assert value(found, "mqtt_broker_probe_success", broker="t8_acl") == 1


async def test_roundtrip_denied_by_acl_mqtt5(transport: Transport) -> None:
    """MQTT 5: Mosquitto answers a publish its ACL denies with PUBACK 0x87."""
    broker = with_roundtrip(transport.broker("t8_acl"), "probe/denied", qos=1)
    result = await Prober().probe(broker)
    assert failure_of(result) == ("roundtrip", "denied")
    assert result.failure is not None and "0x87" in result.failure.detail
    assert result.mqtt is not None and result.mqtt.connack_code == 0  # it accepts connections...
    assert result.roundtrip is not None and not result.roundtrip.success  # ...but does not route messages
    found = samples(exposition([result]))
    assert value(found, "mqtt_broker_probe_success", broker="t8_acl") == 0
    assert value(found, "mqtt_broker_roundtrip_success", broker="t8_acl") == 0
    assert value(found, "mqtt_broker_probe_failure", broker="t8_acl", stage="roundtrip", reason="denied") == 1
    assert not label_sets(found, "mqtt_broker_roundtrip_duration_seconds")
    assert value(found, "mqtt_broker_connect_success", broker="t8_acl") == 1


async def test_roundtrip_denied_by_acl_mqtt311_is_a_timeout(transport: Transport) -> None:
    """MQTT 3.1.1 cannot say no to a publish: the broker drops it and the message never comes back."""
    broker = with_roundtrip(transport.broker("t8_acl"), "probe/denied", qos=1, timeout=0.5, protocol="3.1.1")
    result = await Prober().probe(broker)
    assert failure_of(result) == ("roundtrip", "timeout")
    assert result.failure is not None and "come back" in result.failure.detail


async def test_roundtrip_over_wss(transport: Transport) -> None:
    result = await Prober().probe(with_roundtrip(transport.broker("t8_wss_acl", wss=True), "probe/allowed"))
    assert result.failure is None, result.failure
    assert result.roundtrip is not None and result.roundtrip.success
    denied = await Prober().probe(with_roundtrip(transport.broker("t8_wss_acl", wss=True), "probe/denied"))
    assert failure_of(denied) == ("roundtrip", "denied")


async def test_roundtrip_runs_over_the_unverified_connection_when_the_chain_is_untrusted(lab: Lab) -> None:
    result = await Prober().probe(with_roundtrip(lab.broker("expired"), "probe/anything"))
    assert failure_of(result) == ("trust", "untrusted")  # the primary failure stays the certificate
    assert (
        result.roundtrip is not None and result.roundtrip.success and result.roundtrip.unverified_connection
    )
    found = samples(exposition([result]))
    assert value(found, "mqtt_broker_roundtrip_success", broker="expired") == 1


async def test_roundtrip_is_skipped_when_the_connect_is_refused(lab: Lab) -> None:
    result = await Prober().probe(with_roundtrip(lab.broker("password_wrong"), "probe/x"))
    assert failure_of(result) == ("mqtt", "refused")
    assert result.roundtrip is None


async def test_roundtrips_that_give_up_leave_nothing_behind(transport: Transport) -> None:
    """Deadlines hit while paho connects (in its thread), while it waits for the CONNACK over a WebSocket,
    or while we wait for the message: no socket, reader or aiomqtt task may survive the probe."""
    connections = 0

    async def connack_for_the_probe_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {ws.accept_value(key)}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n".encode()
        )
        await read_client_frame(reader)  # CONNECT
        if connections % 2:  # the probe's connection; the round trip's (every second one) gets nothing
            writer.write(ws.encode_frame(ws.OP_BINARY, b"\x20\x03\x00\x00\x00", mask=None))
        await reader.read()

    def misc_tasks() -> list[asyncio.Task[Any]]:
        return [task for task in asyncio.all_tasks() if "_misc_loop" in repr(task.get_coro())]

    async with serving(
        connack_for_the_probe_only, server_context(transport.good, transport.lab.intermediate)
    ) as port:
        silent = BrokerConfig(
            mqtt=V5,
            name="silent-roundtrip",
            target=Target("127.0.0.1", port, scheme="wss", path="/mqtt"),
            timeout=3.0,
            tls=transport.tls,
        )
        brokers = [
            with_roundtrip(silent, "probe/x", timeout=0.5),  # waiting for the CONNACK
            with_roundtrip(
                transport.broker("t8_wss_acl", wss=True), "probe/allowed", timeout=0.01
            ),  # connecting
            with_roundtrip(
                transport.broker("t8_acl"), "probe/denied", timeout=0.3, protocol="3.1.1"
            ),  # the message
        ]
        prober = Prober()
        for broker in brokers:
            await prober.probe(broker)  # warm-up: contexts, thread pool
        await asyncio.sleep(0.5)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(3):
            for broker in brokers:
                assert failure_of(await prober.probe(broker)) == ("roundtrip", "timeout")
        await asyncio.sleep(1.0)  # paho's thread finishes whatever it was doing
        assert not misc_tasks()
        assert len(os.listdir("/proc/self/fd")) <= before + 1
