"""Brokers other than Mosquitto, for real: RabbitMQ 3.10 (MQTT and Web-MQTT plugins, MQTT 3.1.1 only) and
amqtt 0.12 (MQTT 3.1.1 only), each started once per test session on ephemeral loopback ports.

What a user relies on here: the verdicts are right on these brokers too, and a probe never leaves the
probe's password in a broker's log (RabbitMQ logs a CONNECT it cannot parse byte by byte).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from exporter.config import BrokerConfig, MqttSettings, Secret, Target, TlsSettings
from exporter.lab.amqtt import Amqtt, amqtt_available
from exporter.lab.daemon import LabBroker, LabBrokerError
from exporter.lab.pki import Pki
from exporter.lab.rabbitmq import RabbitMQ, RabbitTls, RabbitUser, rabbitmq_binary
from exporter.probe import Prober
from exporter.results import ProbeResult

PASSWORD = "s3cret-Broker-pa55-never-logged"
WRONG = "wrong-Pa55-also-never-logged"

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("brokers")]


@dataclass(frozen=True)
class Running:
    """One running broker: where it listens, the CA that trusts it, and its log."""

    kind: str
    process: LabBroker
    ca_file: Path

    def config(
        self, *, wss: bool = False, password: str = PASSWORD, user: str = "monitor", **mqtt: Any
    ) -> BrokerConfig:
        if wss:
            found = re.fullmatch(r"wss://([^:/]+):(\d+)(/.*)", self.process.wss_url)
            assert found is not None
            target = Target(found.group(1), int(found.group(2)), "wss", found.group(3))
        else:
            host, _, port = self.process.mqtts_address.rpartition(":")
            target = Target(host, int(port))
        return BrokerConfig(
            name=f"{self.kind}-{'wss' if wss else 'mqtts'}",
            target=target,
            timeout=5.0,
            tls=TlsSettings(ca_file=str(self.ca_file), server_name="localhost"),
            mqtt=MqttSettings(username=user, password=Secret(password), **mqtt),
        )

    def log(self) -> str:
        return self.process.log_text()


def _running(kind: str, broker: LabBroker, ca_file: Path) -> Iterator[Running]:
    try:
        broker.start()
    except LabBrokerError as exc:
        pytest.fail(f"{kind} did not start: {exc}")
    try:
        yield Running(kind, broker, ca_file)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def broker_pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("broker-pki"))


@pytest.fixture(scope="session")
def rabbitmq(broker_pki: Pki) -> Iterator[Running]:
    if rabbitmq_binary() is None:
        pytest.skip(
            "rabbitmq-server is not installed: bash scripts/ensure-system-packages.sh brokers (make test does)"
        )
    root = broker_pki.root("Rabbit Root CA")
    inter = broker_pki.intermediate("Rabbit Intermediate CA", root)
    leaf = broker_pki.leaf("rabbit", inter)
    users = [
        RabbitUser("monitor", PASSWORD),
        RabbitUser("no-subscribe", PASSWORD, configure="^$", read="^$"),
    ]
    broker = RabbitMQ(
        RabbitTls(leaf.cert_path, leaf.key_path, broker_pki.bundle("rabbit-cas", inter, root)), users
    )
    yield from _running("rabbitmq", broker, root.cert_path)


@pytest.fixture(scope="session")
def amqtt(broker_pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    if not amqtt_available():
        pytest.skip("amqtt is not installed: it is a dev dependency (make venv installs it)")
    root = broker_pki.root("Amqtt Root CA")
    inter = broker_pki.intermediate("Amqtt Intermediate CA", root)
    leaf = broker_pki.leaf("amqtt", inter)
    broker = Amqtt(
        tmp_path_factory.mktemp("amqtt"),
        certfile=leaf.chain_path(inter),
        keyfile=leaf.key_path,
        cafile=root.cert_path,
        users={"monitor": PASSWORD},
    )
    yield from _running("amqtt", broker, root.cert_path)


@pytest.fixture(params=["rabbitmq", "amqtt"])
def lab_broker(request: pytest.FixtureRequest) -> Running:
    broker: Running = request.getfixturevalue(request.param)
    return broker


def password_in_log(text: str, password: str) -> bool:
    """The password as text, or as the byte values RabbitMQ prints for a frame it cannot parse."""
    numbers = bytes(int(n) for n in re.findall(r"(?<![\d.:])\d{1,3}(?![\d.:])", text) if int(n) < 256)
    return password in text or password.encode() in numbers


def summary(result: ProbeResult) -> tuple[str, str] | None:
    return (result.failure.stage.value, result.failure.reason.value) if result.failure else None


@pytest.mark.parametrize("wss", [False, True], ids=["mqtts", "wss"])
async def test_healthy_broker_is_trusted_and_accepts_the_probe(lab_broker: Running, wss: bool) -> None:
    result = await Prober().probe(lab_broker.config(wss=wss, protocol="3.1.1"))
    assert summary(result) is None, result.failure
    assert result.tls is not None and result.tls.verdict.trusted
    assert result.mqtt is not None and result.mqtt.connack_code == 0


async def test_wrong_password_is_refused_with_the_brokers_code(lab_broker: Running) -> None:
    result = await Prober().probe(lab_broker.config(password=WRONG, protocol="3.1.1"))
    assert summary(result) == ("mqtt", "refused")
    assert result.mqtt is not None
    # RabbitMQ: 4 "bad user name or password"; amqtt: 5 "not authorized" for every failure
    assert result.mqtt.connack_code == (4 if lab_broker.kind == "rabbitmq" else 5)
