"""Every way a broker is reached (issue 8), against real servers on loopback:

* MQTT over secure WebSockets: Mosquitto's ``protocol websockets`` listener with TLS (good and expired
  certificate), an aiohttp TLS server answering 404/200, and a scripted WebSocket server for what
  Mosquitto will not do (fragments, pings, close, bad handshakes, silence);
* ALPN against a Python TLS server that negotiates it, and ``tls.max_version``/``min_version`` against
  the lab's Mosquitto (one of them TLS 1.2-only);
* end to end: the exporter process, configured in YAML, reaching the transport lab's Mosquitto over
  WebSockets, with every address behind a name and with the round trip.

The Mosquitto of these tests is the ``transport`` fixture (tests/conftest.py, tests/lab/transport.py).
Elsewhere: the round trip in tests/test_roundtrip.py, every address behind a name in
tests/test_addresses.py, SOCKS5 and HTTP CONNECT proxies in tests/test_proxy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from mqtt_cert_exporter.config import BrokerConfig, MqttSettings, Target
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire import websocket as ws
from tests.conftest import Lab, promtool_check, start_exporter, wait_for
from tests.lab.scrape import Samples, label_sets, samples, value
from tests.lab.transport import (
    V5,
    Transport,
    exposition,
    failure_of,
    read_client_frame,
    server_context,
    serving,
)

pytestmark = pytest.mark.slow


# --------------------------------------------------------------------------------------------------
# MQTT over secure WebSockets: Mosquitto


async def test_wss_good_certificate(transport: Transport) -> None:
    result = await Prober().probe(transport.broker("t8_wss", wss=True))
    assert result.failure is None, result.failure
    assert result.websocket is not None and result.websocket.status_code == 101
    assert result.websocket.subprotocol == "mqtt"
    assert result.mqtt is not None and result.mqtt.connack_code == 0
    assert result.tls is not None and result.tls.verdict.trusted
    assert [cert.common_name for cert in result.tls.chain] == ["t8-good", "Lab Intermediate CA"]
    phases = [phase.value for phase, _ in result.durations]
    assert phases == ["resolve", "connect", "tls", "websocket", "mqtt", "total"]
    found = samples(exposition([result]))
    assert value(found, "mqtt_broker_websocket_upgrade_status_code", broker="t8_wss") == 101
    assert value(found, "mqtt_broker_probe_success", broker="t8_wss") == 1


async def test_wss_expired_certificate_still_reports_expiry_and_mqtt(transport: Transport) -> None:
    result = await Prober().probe(transport.broker("t8_wss_expired", wss=True))
    assert failure_of(result) == ("trust", "untrusted")
    assert result.tls is not None and [p.value for p in result.tls.verdict.problems] == ["expired"]
    assert result.tls.chain[0].not_after < result.started
    # Over the second, non-verifying connection: the upgrade and the CONNACK still happened.
    assert result.websocket is not None and result.websocket.status_code == 101
    assert result.mqtt is not None and result.mqtt.connack_code == 0 and result.mqtt.unverified_connection


async def test_mqtts_broker_has_no_websocket_series(transport: Transport) -> None:
    result = await Prober().probe(transport.broker("t8_acl"))
    assert result.success and result.websocket is None
    assert not label_sets(samples(exposition([result])), "mqtt_broker_websocket_upgrade_status_code")


# -- an HTTP server that is not a WebSocket endpoint -------------------------------------------------


@pytest.fixture
async def https_app(transport: Transport) -> AsyncIterator[int]:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello, not a websocket\n")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(
        runner, "127.0.0.1", 0, ssl_context=server_context(transport.good, transport.lab.intermediate)
    )
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # noqa: SLF001 - the port aiohttp bound
    finally:
        await runner.cleanup()


@pytest.mark.parametrize(("path", "status"), [("/mqtt", 404), ("/hello", 200)])
async def test_wss_upgrade_rejected_with_its_http_status(
    transport: Transport, https_app: int, path: str, status: int
) -> None:
    broker = BrokerConfig(
        mqtt=V5,
        name="web",
        target=Target("127.0.0.1", https_app, scheme="wss", path=path),
        timeout=3.0,
        tls=transport.tls,
    )
    result = await Prober().probe(broker)
    assert failure_of(result) == ("websocket", "upgrade_rejected")
    assert (
        result.failure is not None
        and f"HTTP {status}" in result.failure.detail
        and path in result.failure.detail
    )
    assert result.websocket is not None and result.websocket.status_code == status
    assert result.mqtt is None
    found = samples(exposition([result]))
    assert value(found, "mqtt_broker_websocket_upgrade_status_code", broker="web") == status
    assert (
        value(found, "mqtt_broker_probe_failure", broker="web", stage="websocket", reason="upgrade_rejected")
        == 1
    )


# -- a scripted WebSocket server: what Mosquitto will not do -------------------------------------------


@dataclass
class ScriptedServer:
    """Completes (or botches) the upgrade, then plays ``after_connect`` once the CONNECT frame arrived."""

    behaviour: str
    seen: list[tuple[int, bytes, bool]] = field(default_factory=list)
    requests: list[bytes] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        if self.behaviour == "silent":
            await reader.read()
            return
        if self.behaviour == "hangup":
            return
        key = next(
            line.split(":", 1)[1].strip()
            for line in head.decode().split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        accept = "AAAA" if self.behaviour == "bad_accept" else ws.accept_value(key)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n".encode()
        )
        await writer.drain()
        self.seen.append(await read_client_frame(reader))  # the CONNECT
        frame = ws.encode_frame
        if self.behaviour == "fragmented":
            # A ping, then a v5 CONNACK cut across three frames with the pong expected in between.
            writer.write(frame(ws.OP_PING, b"are you there", mask=None))
            writer.write(frame(ws.OP_BINARY, b"\x20", mask=None, fin=False))
            writer.write(frame(ws.OP_CONTINUATION, b"\x03\x00", mask=None, fin=False))
            writer.write(frame(ws.OP_CONTINUATION, b"\x00\x00", mask=None, fin=True))
        elif self.behaviour == "close":
            writer.write(frame(ws.OP_CLOSE, ws.close_payload(1011, "internal error"), mask=None))
        elif self.behaviour == "masked":
            writer.write(frame(ws.OP_BINARY, b"\x20\x03\x00\x00\x00", mask=b"abcd"))
        elif self.behaviour == "text":
            writer.write(frame(ws.OP_TEXT, b"CONNACK", mask=None))
        await writer.drain()
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                self.seen.append(await read_client_frame(reader))


@pytest.mark.parametrize(
    ("behaviour", "failure"),
    [
        ("fragmented", None),
        ("close", ("mqtt", "websocket_closed")),
        ("masked", ("websocket", "protocol_error")),
        ("text", ("websocket", "protocol_error")),
        ("bad_accept", ("websocket", "protocol_error")),
        ("hangup", ("websocket", "closed")),
        ("silent", ("websocket", "timeout")),
    ],
)
async def test_wss_against_a_scripted_server(
    transport: Transport, behaviour: str, failure: tuple[str, str] | None
) -> None:
    server = ScriptedServer(behaviour)
    async with serving(server, server_context(transport.good, transport.lab.intermediate)) as port:
        broker = BrokerConfig(
            mqtt=V5,
            name="scripted",
            target=Target("127.0.0.1", port, scheme="wss", path="/ws/mqtt"),
            timeout=1.0,
            tls=transport.tls,
        )
        result = await Prober().probe(broker)
        await asyncio.sleep(0.05)  # let the server read what we sent last
    assert failure_of(result) == failure, result.failure
    request = server.requests[0].decode()
    assert request.startswith("GET /ws/mqtt HTTP/1.1\r\n") and f"Host: localhost:{port}\r\n" in request
    if behaviour in ("silent", "hangup"):
        assert result.websocket is None
        return
    assert result.websocket is not None and result.websocket.status_code == 101
    if behaviour == "bad_accept":
        assert not server.seen  # nothing sent into a WebSocket that was not properly opened
        return
    opcode, connect, masked = server.seen[0]
    assert opcode == ws.OP_BINARY and masked and connect[0] == 0x10  # CONNECT in a masked binary frame
    assert all(masked for _, _, masked in server.seen)  # every client frame is masked
    if behaviour == "fragmented":
        assert result.mqtt is not None and result.mqtt.connack_code == 0
        assert (ws.OP_PONG, b"are you there", True) in server.seen
        assert (ws.OP_BINARY, b"\xe0\x00", True) in server.seen  # DISCONNECT, framed
    if behaviour == "close":
        assert (ws.OP_CLOSE, ws.close_payload(1011), True) in server.seen  # the close is echoed


# --------------------------------------------------------------------------------------------------
# ALPN and TLS versions


@pytest.mark.parametrize(("offered", "negotiated"), [(("x-amzn-mqtt-ca",), "x-amzn-mqtt-ca"), ((), "")])
async def test_alpn_negotiated_protocol_is_reported(
    transport: Transport, offered: tuple[str, ...], negotiated: str
) -> None:
    async def broker_like(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)  # CONNECT
        writer.write(b"\x20\x02\x00\x00")  # 3.1.1 CONNACK, accepted
        await writer.drain()
        await reader.read(65536)

    context = server_context(transport.good, transport.lab.intermediate, alpn=["x-amzn-mqtt-ca", "mqtt"])
    async with serving(broker_like, context) as port:
        broker = BrokerConfig(
            name="alpn",
            target=Target("127.0.0.1", port),
            timeout=3.0,
            tls=dataclasses.replace(transport.tls, alpn=offered),
            mqtt=MqttSettings(protocol="3.1.1"),
        )
        result = await Prober().probe(broker)
    assert result.failure is None, result.failure
    assert result.tls is not None and result.tls.alpn_protocol == negotiated
    found = samples(exposition([result]))
    expected = [{"broker": "alpn", "protocol": negotiated}] if negotiated else []
    assert label_sets(found, "mqtt_broker_tls_alpn_protocol_info") == expected


async def test_max_version_tls12_negotiates_tls12_with_a_tls13_broker(lab: Lab) -> None:
    result = await Prober().probe(lab.broker("good", tls={"max_version": "TLSv1.2"}))
    assert result.failure is None, result.failure
    assert result.tls is not None and result.tls.version == "TLSv1.2"
    assert (await Prober().probe(lab.broker("good"))).tls.version == "TLSv1.3"  # type: ignore[union-attr]


async def test_min_version_tls13_against_a_tls12_only_broker(lab: Lab) -> None:
    result = await Prober().probe(lab.broker("tls12", tls={"min_version": "TLSv1.3"}))
    assert failure_of(result) == ("tls", "handshake_failure")


# --------------------------------------------------------------------------------------------------
# End to end: the exporter process, configured in YAML, read through /metrics


def test_exporter_process_with_every_way_of_reaching_a_broker(transport: Transport, tmp_path: Path) -> None:
    acl_port, wss_port = transport.mosquitto.port("t8_acl"), transport.mosquitto.port("t8_wss_expired")
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
defaults:
  interval: 30s
  timeout: 3s
  tls: {{ca_file: '{transport.ca}', server_name: localhost}}
brokers:
  - name: websockets-expired
    address: 'wss://127.0.0.1:{wss_port}/mqtt'
  - name: routed
    address: '127.0.0.1:{acl_port}'
    addresses: all          # an IP literal is its own single address: labelled all the same
    mqtt: {{roundtrip: {{topic: probe/allowed, qos: 1}}}}
  - name: not-routed
    address: '127.0.0.1:{acl_port}'
    mqtt: {{protocol: '5', roundtrip: {{topic: probe/denied}}}}
"""
    )
    process = start_exporter(config, tmp_path)
    try:

        def scraped() -> Samples | None:
            found = samples(process.get("/metrics"))
            names = ("websockets-expired", "not-routed")
            ready = all(value(found, "mqtt_broker_probe_success", broker=n) is not None for n in names)
            routed = value(found, "mqtt_broker_probe_success", broker="routed", address="127.0.0.1")
            return found if ready and routed is not None else None

        found = wait_for(scraped)
        text = process.get("/metrics")
    finally:
        process.stop()
    assert value(found, "mqtt_broker_websocket_upgrade_status_code", broker="websockets-expired") == 101
    assert value(found, "mqtt_broker_tls_trust_problem", broker="websockets-expired", problem="expired") == 1
    assert value(found, "mqtt_broker_connect_success", broker="websockets-expired") == 1
    phases = {
        labels["phase"]
        for labels in label_sets(found, "mqtt_broker_probe_duration_seconds")
        if labels["broker"] == "websockets-expired"
    }
    assert "websocket" in phases
    assert value(found, "mqtt_broker_probe_success", broker="routed", address="127.0.0.1") == 1
    assert value(found, "mqtt_broker_roundtrip_success", broker="routed", address="127.0.0.1") == 1
    assert value(found, "mqtt_broker_addresses_same_leaf", broker="routed") == 1
    assert value(found, "mqtt_broker_probe_success", broker="not-routed") == 0
    assert (
        value(found, "mqtt_broker_probe_failure", broker="not-routed", stage="roundtrip", reason="denied")
        == 1
    )
    promtool_check(text)
