"""The lab of the transport tests (issue 8): one Mosquitto with WebSocket, ACL and multi-address
listeners, the names its addresses stand behind (answered by an injected resolver: no DNS in tests),
servers in the test's own loop, and the results rendered as a scrape renders them (read back by
tests/lab/scrape.py).

tests/conftest.py starts the Mosquitto once per session (the ``transport`` fixture); tests/test_transport.py,
test_roundtrip.py, test_addresses.py and test_proxy.py use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, generate_latest

from mqtt_cert_exporter.collector import ExporterCollector, ExporterFacts
from mqtt_cert_exporter.config import (
    BrokerConfig,
    MqttSettings,
    RoundtripSettings,
    Target,
    TargetScheme,
    TlsSettings,
)
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.lab.ports import free_port
from mqtt_cert_exporter.probe.wire import websocket as ws
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.store import ResultStore


class LabPki(Protocol):
    """What these helpers need of the test lab (tests/conftest.py's ``Lab``, which imports this module):
    its PKI, the root its brokers' chains end in, and the intermediate that issues their leaves."""

    @property
    def pki(self) -> Pki: ...

    @property
    def root(self) -> Issued: ...

    @property
    def intermediate(self) -> Issued: ...


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


def failure_of(result: ProbeResult) -> tuple[str, str] | None:
    return (result.failure.stage.value, result.failure.reason.value) if result.failure else None


def with_roundtrip(broker: BrokerConfig, topic: str, **settings: Any) -> BrokerConfig:
    protocol = settings.pop("protocol", broker.mqtt.protocol)
    roundtrip = RoundtripSettings(topic, **settings)
    return dataclasses.replace(
        broker, mqtt=dataclasses.replace(broker.mqtt, protocol=protocol, roundtrip=roundtrip)
    )


# --------------------------------------------------------------------------------------------------
# The Mosquitto of the transport tests: WebSocket, ACL and multi-address listeners


@dataclass
class Transport:
    lab: LabPki
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


def start_transport(lab: LabPki, directory: Path) -> Transport:
    """The certificates (from the lab's PKI) and the Mosquitto, started: the caller stops it."""
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
    return Transport(
        lab, good, expired, nodes, mosquitto, cluster_port, same_port, ca=str(lab.root.cert_path)
    )


# --------------------------------------------------------------------------------------------------
# Servers in the test's own loop


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
