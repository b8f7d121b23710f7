"""How long brokers keep a connection that sends nothing on their MQTT TLS listener: what a prober that
connected far ahead of its handshakes would meet (docs/performance.md, the first sweep's 2x target).

    python -m bench.idle [--limit 30]

Starts the lab's Mosquitto, RabbitMQ and ejabberd (Debian's packages, as the suite does), opens one TCP
connection to each one's MQTT TLS listener, sends no ClientHello, and reports when the broker closed it
(or that it was still open after ``--limit`` seconds). Each broker first answers a probe's CONNECT (with
a refusal: it sends no credentials), so its start-up is not what is measured.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import socket
import tempfile
import time
from pathlib import Path

from mqtt_cert_exporter.config import BrokerConfig, MqttProtocol, MqttSettings, Target, TlsSettings
from mqtt_cert_exporter.eventloop import run
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.probe import Prober
from tests.lab.ejabberd import Ejabberd
from tests.lab.rabbitmq import RabbitMQ, RabbitTls, RabbitUser


def idle_until_closed(port: int, limit: float) -> str:
    """Connect, send nothing, and say when the server closed the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        connection.settimeout(limit)
        started = time.monotonic()
        try:
            data = connection.recv(4096)
        except TimeoutError:
            return f"still open after {limit:g} s"
        except OSError as exc:
            return f"{type(exc).__name__} after {time.monotonic() - started:.1f} s"
        return f"closed after {time.monotonic() - started:.1f} s ({len(data)} bytes sent first)"


def wait_until_serving(
    name: str, port: int, ca_file: Path, protocol: MqttProtocol, timeout: float = 60
) -> None:
    broker = BrokerConfig(
        name=name,
        target=Target("127.0.0.1", port),
        tls=TlsSettings(ca_file=str(ca_file), server_name="localhost"),
        mqtt=MqttSettings(protocol=protocol),
    )
    deadline = time.monotonic() + timeout
    while (result := run(Prober().probe(broker))).mqtt is None:  # no CONNACK yet (a refusal is one)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} does not serve MQTT after {timeout:g} s: {result.failure}")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.idle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=float, default=30.0, help="seconds to wait for a close")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pki = Pki(directory / "pki")
        root = pki.root("Idle Root")
        intermediate = pki.intermediate("Idle Intermediate", root)
        leaf = pki.leaf("localhost", intermediate)
        mosquitto = Mosquitto(
            [Listener("idle", cert=leaf.chain_path(intermediate), key=leaf.key_path)], directory / "mosquitto"
        )
        rabbitmq = RabbitMQ(
            RabbitTls(leaf.cert_path, leaf.key_path, pki.bundle("idle-cas", intermediate, root)),
            [RabbitUser("monitor", "idle-password")],
        )
        ejabberd = Ejabberd(
            certfile=leaf.chain_path(intermediate), keyfile=leaf.key_path, users={"monitor": "idle-password"}
        )
        brokers: list[Mosquitto | RabbitMQ | Ejabberd] = [mosquitto, rabbitmq, ejabberd]
        try:
            for broker in brokers:
                broker.start()
            ports: dict[str, tuple[int, MqttProtocol]] = {
                "mosquitto": (mosquitto.port("idle"), "5"),
                "rabbitmq": (rabbitmq.mqtts_port, "3.1.1"),
                "ejabberd": (ejabberd.mqtts_port, "5"),
            }
            for name, (port, protocol) in ports.items():
                wait_until_serving(name, port, root.cert_path, protocol)
            with concurrent.futures.ThreadPoolExecutor(len(ports)) as pool:
                found = {
                    name: pool.submit(idle_until_closed, port, args.limit)
                    for name, (port, _) in ports.items()
                }
                for name, answer in found.items():
                    print(f"{name}: {answer.result()}")
        finally:
            for broker in reversed(brokers):
                broker.stop()


if __name__ == "__main__":
    main()
