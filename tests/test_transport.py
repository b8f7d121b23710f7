"""Every way a broker is reached (issue 8), against real servers on loopback:

* MQTT over secure WebSockets: Mosquitto's ``protocol websockets`` listener with TLS (good and expired
  certificate), an aiohttp TLS server answering 404/200, and a scripted WebSocket server for what
  Mosquitto will not do (fragments, pings, close, bad handshakes, silence);
* ALPN against a Python TLS server that negotiates it, and ``tls.max_version``;
* every address behind a name: Mosquitto listeners on 127.0.0.1, 127.0.0.2 and ::1 serving different
  certificates, reached through a name that an injected resolver answers (no DNS in tests);
* the round trip (aiomqtt) against a Mosquitto listener with an ACL;
* SOCKS5 and HTTP CONNECT proxies written here, on real sockets.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import datetime as dt
import os
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mqtt_cert_exporter.collector import ExporterCollector, ExporterFacts
from mqtt_cert_exporter.config import (
    BrokerConfig,
    MqttSettings,
    ProxyScheme,
    ProxySettings,
    RoundtripSettings,
    Secret,
    Target,
    TargetScheme,
    TlsSettings,
)
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Issued
from mqtt_cert_exporter.lab.ports import free_port
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire import websocket as ws
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.scheduler import Scheduler
from mqtt_cert_exporter.store import ResultStore
from tests.conftest import Lab, promtool, start_exporter, wait_for

pytestmark = pytest.mark.slow

CLUSTER = "mqtt.cluster.test"
SAME = "same.cluster.test"
PARTIAL = "partial.cluster.test"
NAMES: dict[str, list[str]] = {
    CLUSTER: ["127.0.0.1", "127.0.0.2", "::1", "127.0.0.2"],  # a duplicate, as resolvers return per socktype
    SAME: ["127.0.0.2", "127.0.0.1"],
    PARTIAL: ["127.0.0.1", "127.0.0.3"],  # nothing listens on 127.0.0.3
    "v6-first.cluster.test": ["::1", "127.0.0.2"],
    "v4-only.cluster.test": ["127.0.0.1"],
}

#: These tests count connections and script the broker's answers: the version is pinned, not learned
#: (``auto`` adds a learning connection; tests/test_brokers.py and test_negotiation.py cover it).
V5 = MqttSettings(protocol="5")


async def resolver(host: str, port: int) -> list[str]:
    if host not in NAMES:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return list(NAMES[host])


async def no_resolver(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} must be resolved by the proxy, not by us")


def failure_of(result: ProbeResult) -> tuple[str, str] | None:
    return (result.failure.stage.value, result.failure.reason.value) if result.failure else None


# --------------------------------------------------------------------------------------------------
# The lab of this module: one Mosquitto with WebSocket, ACL and multi-address listeners.


@dataclass
class Transport:
    lab: Lab
    good: Issued
    expired: Issued
    nodes: dict[str, Issued]
    mosquitto: Mosquitto
    cluster_port: int
    same_port: int
    ca: str

    @property
    def tls(self) -> TlsSettings:
        return TlsSettings(ca_file=self.ca, server_name="localhost")

    def broker(self, listener: str, *, wss: bool = False, **changes: Any) -> BrokerConfig:
        scheme: TargetScheme = "wss" if wss else "mqtts"
        path = "/mqtt" if wss else ""
        broker = BrokerConfig(
            mqtt=V5,
            name=listener,
            target=Target("127.0.0.1", self.mosquitto.port(listener), scheme=scheme, path=path),
            timeout=3.0,
            tls=self.tls,
        )
        return dataclasses.replace(broker, **changes)

    def cluster(self, name: str = CLUSTER, **changes: Any) -> BrokerConfig:
        port = self.same_port if name == SAME else self.cluster_port
        broker = BrokerConfig(
            mqtt=V5,
            name=name.split(".", maxsplit=1)[0],
            target=Target(name, port),
            timeout=3.0,
            tls=TlsSettings(ca_file=self.ca),
            addresses="all",
        )
        return dataclasses.replace(broker, **changes)


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def common_free_port(hosts: Sequence[str]) -> int:
    """A port free on every one of ``hosts`` (a name's addresses share the port)."""
    for _ in range(100):
        port = free_port(hosts[0])
        if all(_bindable(host, port) for host in hosts[1:]):
            return port
    raise RuntimeError(f"no common free port on {hosts}")


@pytest.fixture(scope="module")
def transport(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Transport]:
    directory = tmp_path_factory.mktemp("transport")
    pki, intermediate = lab.pki, lab.intermediate
    now = dt.datetime.now(dt.UTC)
    good = pki.leaf("t8-good", intermediate)
    expired = pki.leaf("t8-expired", intermediate, not_after=now - dt.timedelta(days=2))
    nodes = {
        node: pki.leaf(f"t8-node-{node}", intermediate, dns_names=("*.cluster.test",), ip_addresses=())
        for node in ("a", "b", "c")
    }
    acl = directory / "acl"
    acl.write_text("# anonymous clients\ntopic readwrite probe/allowed\n")
    acl.chmod(0o644)
    cluster_port = common_free_port(["127.0.0.1", "127.0.0.2", "::1"])
    same_port = common_free_port(["127.0.0.1", "127.0.0.2"])

    def chain(issued: Issued) -> Path:
        return issued.chain_path(intermediate)

    listeners = [
        Listener("t8_wss", websockets=True, cert=chain(good), key=good.key_path),
        Listener("t8_wss_expired", websockets=True, cert=chain(expired), key=expired.key_path),
        Listener("t8_acl", cert=chain(good), key=good.key_path, acl_file=acl),
        Listener("t8_wss_acl", websockets=True, cert=chain(good), key=good.key_path, acl_file=acl),
        Listener(
            "t8_node_a", port=cluster_port, host="127.0.0.1", cert=chain(nodes["a"]), key=nodes["a"].key_path
        ),
        Listener(
            "t8_node_b", port=cluster_port, host="127.0.0.2", cert=chain(nodes["b"]), key=nodes["b"].key_path
        ),
        Listener("t8_node_c", port=cluster_port, host="::1", cert=chain(nodes["c"]), key=nodes["c"].key_path),
        Listener(
            "t8_same_a", port=same_port, host="127.0.0.1", cert=chain(nodes["a"]), key=nodes["a"].key_path
        ),
        Listener(
            "t8_same_b", port=same_port, host="127.0.0.2", cert=chain(nodes["a"]), key=nodes["a"].key_path
        ),
    ]
    mosquitto = Mosquitto(listeners, directory / "mosquitto")
    mosquitto.start()
    try:
        yield Transport(
            lab, good, expired, nodes, mosquitto, cluster_port, same_port, ca=str(lab.root.cert_path)
        )
    finally:
        mosquitto.stop()


def server_context(issued: Issued, intermediate: Issued, *, alpn: Sequence[str] = ()) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(issued.chain_path(intermediate), issued.key_path)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@contextlib.asynccontextmanager
async def serving(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    context: ssl.SSLContext | None,
    host: str = "127.0.0.1",
) -> AsyncIterator[int]:
    """An asyncio server in the test's own loop; yields its port. Handlers are cancelled at the end."""
    tasks: set[asyncio.Task[None]] = set()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError, EOFError):
                await handler(reader, writer)
        finally:
            writer.close()
            tasks.discard(task)

    server = await asyncio.start_server(guarded, host, 0, ssl=context)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --------------------------------------------------------------------------------------------------
# Metrics as a scrape renders them


def exposition(results: Sequence[ProbeResult], grouped: bool = False) -> str:
    store = ResultStore()
    by_broker: dict[str, list[ProbeResult]] = {}
    for result in results:
        by_broker.setdefault(result.broker, []).append(result)
    for group in by_broker.values():
        store.publish(group if grouped else group[:1])
    store.intervals = dict.fromkeys(by_broker, 60.0)
    return render(store)


def render(store: ResultStore) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ExporterCollector(store, lambda: ExporterFacts(brokers=len(store.intervals))))
    return generate_latest(registry).decode()


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


def label_sets(found: Samples, name: str) -> list[dict[str, str]]:
    return [dict(labels) for sample_name, labels in found if sample_name == name]


def promtool_check(text: str) -> None:
    checked = subprocess.run([promtool(), "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


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


async def read_client_frame(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(opcode, unmasked payload, was it masked) of the next frame a client sent."""
    first, second = await reader.readexactly(2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(await reader.readexactly(2), "big")
    elif length == 127:
        length = int.from_bytes(await reader.readexactly(8), "big")
    mask = await reader.readexactly(4) if second & 0x80 else None
    payload = await reader.readexactly(length)
    return first & 0x0F, ws.apply_mask(payload, mask) if mask else payload, mask is not None


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
# Every address behind a name


async def test_every_address_is_probed_with_its_own_certificate(transport: Transport) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster())
    assert [r.address_label for r in results] == ["127.0.0.1", "127.0.0.2", "::1"]  # IPv4 first, deduplicated
    assert [r.ip for r in results] == ["127.0.0.1", "127.0.0.2", "::1"]
    for result in results:
        assert result.failure is None, (result.address_label, result.failure)
        assert result.tls is not None and result.tls.verdict.trusted  # the name, not the IP, is checked
        assert (
            result.duration(result.durations[0][0]) is not None and result.durations[0][0].value == "resolve"
        )
    leaves = [r.tls.chain[0].common_name for r in results if r.tls]
    assert leaves == ["t8-node-a", "t8-node-b", "t8-node-c"]

    text = exposition(results, grouped=True)
    found = samples(text)
    for address in ("127.0.0.1", "127.0.0.2", "::1"):
        assert value(found, "mqtt_broker_probe_success", broker="mqtt", address=address) == 1
        assert value(
            found, "mqtt_broker_cert_expires_in_seconds", broker="mqtt", address=address, position="0"
        )
    assert value(found, "mqtt_broker_addresses_same_leaf", broker="mqtt") == 0
    assert value(found, "mqtt_broker_probe_interval_seconds", broker="mqtt") == 60  # per broker, no address
    infos = label_sets(found, "mqtt_broker_cert_info")
    subjects = {i["address"]: i["subject"] for i in infos if i["position"] == "0"}
    assert subjects.keys() == {"127.0.0.1", "127.0.0.2", "::1"}
    nodes = {"127.0.0.1": "a", "127.0.0.2": "b", "::1": "c"}
    assert all(f"CN=t8-node-{node}" in subjects[address] for address, node in nodes.items())
    promtool_check(text)


async def test_same_leaf_on_every_address(transport: Transport) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster(SAME))
    assert [r.address_label for r in results] == ["127.0.0.2", "127.0.0.1"]
    assert all(r.success for r in results)
    assert (
        value(samples(exposition(results, grouped=True)), "mqtt_broker_addresses_same_leaf", broker="same")
        == 1
    )


@pytest.mark.parametrize(
    ("ip_protocol", "addresses"), [("ip4", ["127.0.0.1", "127.0.0.2"]), ("ip6", ["::1"])]
)
async def test_ip_protocol_restricts_the_addresses(
    transport: Transport, ip_protocol: str, addresses: list[str]
) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster(ip_protocol=ip_protocol))
    assert [r.address_label for r in results] == addresses
    assert all(r.success for r in results)


@pytest.mark.parametrize(("ip_protocol", "ip"), [("any", "127.0.0.2"), ("ip4", "127.0.0.2"), ("ip6", "::1")])
async def test_first_address_prefers_ipv4_and_keeps_the_default_series(
    transport: Transport, ip_protocol: str, ip: str
) -> None:
    broker = transport.cluster("v6-first.cluster.test", addresses="first", ip_protocol=ip_protocol)
    (result,) = await Prober(resolver=resolver).probe_group(broker)
    assert result.success and result.ip == ip and result.address_label == ""
    found = samples(exposition([result]))
    assert label_sets(found, "mqtt_broker_probe_success") == [{"broker": "v6-first"}]  # no address label
    assert not label_sets(found, "mqtt_broker_addresses_same_leaf")


async def test_a_name_that_does_not_resolve_gives_one_unlabelled_result(transport: Transport) -> None:
    results = await Prober(resolver=resolver).probe_group(transport.cluster("nowhere.cluster.test"))
    assert len(results) == 1 and failure_of(results[0]) == ("resolve", "dns_error")
    assert results[0].address_label == ""
    found = samples(exposition(results, grouped=True))
    assert label_sets(found, "mqtt_broker_probe_success") == [{"broker": "nowhere"}]
    assert not label_sets(found, "mqtt_broker_addresses_same_leaf")


async def test_no_address_of_the_wanted_family_is_a_dns_error(transport: Transport) -> None:
    broker = transport.cluster("v4-only.cluster.test", ip_protocol="ip6")
    (result,) = await Prober(resolver=resolver).probe_group(broker)
    assert failure_of(result) == ("resolve", "dns_error")
    assert result.failure is not None and "has no IPv6 address" in result.failure.detail


async def test_scheduler_publishes_every_address_and_counts_failures_per_address(
    transport: Transport, lab: Lab
) -> None:
    store = ResultStore()
    seen: list[tuple[str, str | None]] = []
    all_published = asyncio.Event()

    def on_result(result: ProbeResult, previous: ProbeResult | None) -> None:
        seen.append((result.address_label, previous.address_label if previous else None))
        if len(seen) == 3:  # two addresses of one broker, one plain broker
            all_published.set()

    scheduler = Scheduler(Prober(resolver=resolver), store, on_result=on_result)
    partial = transport.cluster(PARTIAL, interval=60.0)
    plain = dataclasses.replace(lab.broker("good"), name="plain")
    scheduler.apply([partial, plain])
    try:
        await asyncio.wait_for(all_published.wait(), 15)
    finally:
        await scheduler.stop()
    ok, dead = store.results["partial"]
    assert (ok.address_label, ok.success) == ("127.0.0.1", True)
    assert (dead.address_label, failure_of(dead)) == ("127.0.0.3", ("connect", "refused"))
    assert sorted(seen) == [("", None), ("127.0.0.1", None), ("127.0.0.3", None)]

    text = render(store)
    found = samples(text)
    assert value(found, "mqtt_broker_probe_success", broker="partial", address="127.0.0.1") == 1
    assert value(found, "mqtt_broker_probe_success", broker="partial", address="127.0.0.3") == 0
    labels = {"broker": "partial", "address": "127.0.0.3", "stage": "connect", "reason": "refused"}
    assert value(found, "mqtt_broker_probe_failure", **labels) == 1
    assert value(found, "mqtt_broker_probe_failures_total", **labels) == 1
    assert value(found, "mqtt_broker_addresses_same_leaf", broker="partial") == 1  # the one that answered
    # The default broker in the same exposition: exactly the series it always had.
    assert label_sets(found, "mqtt_broker_probe_success").count({"broker": "plain"}) == 1
    assert all(
        "address" not in labels
        for labels in label_sets(found, "mqtt_broker_cert_info")
        if labels["broker"] == "plain"
    )
    promtool_check(text)

    # An address that leaves the name leaves the store, with its counters.
    later = dataclasses.replace(ok, finished=ok.finished + 60)
    store.publish([later])
    assert not any(key[1] == "127.0.0.3" for key in store.failure_counts)
    assert "127.0.0.3" not in render(store)


# --------------------------------------------------------------------------------------------------
# The round trip


def with_roundtrip(broker: BrokerConfig, topic: str, **settings: Any) -> BrokerConfig:
    protocol = settings.pop("protocol", broker.mqtt.protocol)
    roundtrip = RoundtripSettings(topic, **settings)
    return dataclasses.replace(
        broker, mqtt=dataclasses.replace(broker.mqtt, protocol=protocol, roundtrip=roundtrip)
    )


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


# --------------------------------------------------------------------------------------------------
# Proxies


@dataclass
class LoopbackProxy:
    """A SOCKS5 or HTTP CONNECT proxy on loopback, with optional credentials, for real sockets."""

    kind: str  # "socks5" or "http"
    username: str | None = None
    password: str | None = None
    names: dict[str, str] = field(default_factory=lambda: {"mqtt.proxied.test": "127.0.0.1"})
    targets: list[str] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        target = await (self._socks5(reader, writer) if self.kind == "socks5" else self._http(reader, writer))
        if target is None:
            return
        host, port = target
        self.targets.append(f"{host}:{port}")
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(self.names.get(host, host), port)
        except OSError:
            await self._refused(writer)
            return
        await self._granted(writer)
        try:
            await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))
        finally:
            upstream_writer.close()

    async def _socks5(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        _, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        wanted = 0x02 if self.username else 0x00
        if wanted not in methods:
            writer.write(b"\x05\xff")
            return None
        writer.write(bytes([5, wanted]))
        if self.username:
            _, length = await reader.readexactly(2)
            user = (await reader.readexactly(length)).decode()
            (length,) = await reader.readexactly(1)
            password = (await reader.readexactly(length)).decode()
            if (user, password) != (self.username, self.password):
                writer.write(b"\x01\x01")
                return None
            writer.write(b"\x01\x00")
        _, command, _, kind = await reader.readexactly(4)
        assert command == 1
        if kind == 1:
            host = socket.inet_ntop(socket.AF_INET, await reader.readexactly(4))
        elif kind == 4:
            host = socket.inet_ntop(socket.AF_INET6, await reader.readexactly(16))
        else:
            (length,) = await reader.readexactly(1)
            host = (await reader.readexactly(length)).decode()
        port = int.from_bytes(await reader.readexactly(2), "big")
        return host, port

    async def _http(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[str, int] | None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        method, authority, _ = head.split("\r\n")[0].split(" ")
        assert method == "CONNECT"
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            if f"Proxy-Authorization: Basic {token}\r\n" not in head:
                writer.write(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n"
                )
                return None
        host, _, port = authority.rpartition(":")
        return host.strip("[]"), int(port)

    async def _refused(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"\x05\x05\x00\x01" + bytes(6) if self.kind == "socks5" else b"HTTP/1.1 502 Bad Gateway\r\n\r\n"
        )
        await writer.drain()

    async def _granted(self, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"\x05\x00\x00\x01" + bytes(6)
            if self.kind == "socks5"
            else b"HTTP/1.1 200 Connection established\r\n\r\n"
        )
        await writer.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()


def through(
    broker: BrokerConfig, url_scheme: ProxyScheme, port: int, user: str | None = None, pw: str | None = None
) -> BrokerConfig:
    proxy = ProxySettings(url_scheme, "127.0.0.1", port, user, Secret(pw) if pw is not None else None)
    return dataclasses.replace(broker, proxy=proxy)


@pytest.mark.parametrize(("kind", "scheme"), [("socks5", "socks5"), ("socks5", "socks5h"), ("http", "http")])
async def test_probe_through_a_proxy(lab: Lab, kind: ProxyScheme, scheme: ProxyScheme) -> None:
    proxy = LoopbackProxy(kind)
    broker = lab.broker("good", mqtt={"protocol": "5"})
    async with serving(proxy, None) as port:
        result = await Prober(resolver=no_resolver).probe(through(broker, scheme, port))
    assert result.failure is None, result.failure
    assert proxy.targets == [f"127.0.0.1:{broker.target.port}"]
    assert result.tls is not None and result.tls.verdict.trusted


@pytest.mark.parametrize(("kind", "scheme"), [("socks5", "socks5h"), ("http", "http")])
async def test_the_proxy_resolves_the_name(
    transport: Transport, kind: ProxyScheme, scheme: ProxyScheme
) -> None:
    proxy = LoopbackProxy(kind)
    broker = dataclasses.replace(
        transport.broker("t8_acl"),
        target=Target("mqtt.proxied.test", transport.mosquitto.port("t8_acl")),
    )
    async with serving(proxy, None) as port:
        result = await Prober(resolver=no_resolver).probe(through(broker, scheme, port))
    assert result.failure is None, result.failure
    assert proxy.targets == [f"mqtt.proxied.test:{broker.target.port}"]
    assert result.ip == ""  # only the proxy knows
    assert "resolve" not in [phase.value for phase, _ in result.durations]


@pytest.mark.parametrize("kind", ["socks5", "http"])
async def test_proxy_credentials(lab: Lab, kind: ProxyScheme) -> None:
    proxy = LoopbackProxy(kind, username="monitor", password="pr0xy-pw")
    async with serving(proxy, None) as port:
        good = await Prober().probe(through(lab.broker("good"), kind, port, "monitor", "pr0xy-pw"))
        wrong = await Prober().probe(through(lab.broker("good"), kind, port, "monitor", "wrong"))
        missing = await Prober().probe(through(lab.broker("good"), kind, port))
    assert good.failure is None, good.failure
    for result in (wrong, missing):
        assert failure_of(result) == ("connect", "proxy_error")
        assert result.failure is not None and "pr0xy-pw" not in result.failure.detail


async def test_proxy_reports_the_broker_refused(lab: Lab) -> None:
    proxy = LoopbackProxy("socks5")
    async with serving(proxy, None) as port:
        result = await Prober().probe(through(lab.broker("closed"), "socks5", port))
    assert failure_of(result) == ("connect", "refused")
    assert result.failure is not None and "SOCKS5" in result.failure.detail


async def test_proxy_down(lab: Lab) -> None:
    closed_port = lab.brokers["closed"].target.port
    result = await Prober().probe(through(lab.broker("good"), "socks5", closed_port))
    assert failure_of(result) == ("connect", "refused")
    assert result.failure is not None and "proxy socks5://127.0.0.1" in result.failure.detail


@pytest.mark.parametrize("kind", ["socks5", "http"])
async def test_roundtrip_and_wss_through_a_proxy(transport: Transport, kind: ProxyScheme) -> None:
    proxy = LoopbackProxy(kind, username="monitor", password="pw")
    async with serving(proxy, None) as port:
        mqtts = with_roundtrip(
            through(transport.broker("t8_acl"), kind, port, "monitor", "pw"), "probe/allowed"
        )
        wss = with_roundtrip(
            through(transport.broker("t8_wss_acl", wss=True), kind, port, "monitor", "pw"), "probe/allowed"
        )
        results = [await Prober().probe(mqtts), await Prober().probe(wss)]
    for result in results:
        assert result.failure is None, result.failure
        assert result.roundtrip is not None and result.roundtrip.success
    # Each probe: the CONNECT/CONNACK connection and the round trip's (paho, in its thread), both proxied.
    assert len(proxy.targets) == 4


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
