"""The test lab: real Mosquitto brokers with certificates made here, plus small hostile servers.

One Mosquitto process serves most scenarios (one listener each); a second one is TLS 1.2-only.
Everything binds to loopback on ephemeral ports, so parallel runs never collide.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import http.server
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mqtt_cert_exporter import eventloop
from mqtt_cert_exporter.config import BrokerConfig, MqttSettings, Secret, Target, TlsSettings
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto, make_password_file, mosquitto_binary
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.probe.wire.mqtt import encode_varint
from mqtt_cert_exporter.results import CertFacts
from tests.lab.hostile import BlackHole, HostileServer, after_tls, garbage, reset_on_accept, silent
from tests.lab.process import start_exporter_process, stop_process
from tests.lab.transport import Transport, start_transport

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "s3cret-Pa55word-never-logged"
UTC = dt.UTC


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: end-to-end tests that start processes")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """In-process async tests run on the event loop the exporter's commands run on (uvloop)."""
    factory = eventloop.loop_factory()
    return {"uvloop": factory} if factory is not None else {"asyncio": asyncio.new_event_loop}


@dataclass
class Lab:
    pki: Pki
    root: Issued
    intermediate: Issued
    other_root: Issued
    client_root: Issued
    client: Issued
    brokers: dict[str, BrokerConfig] = field(default_factory=dict)
    mosquitto: list[Mosquitto] = field(default_factory=list)
    servers: list[Any] = field(default_factory=list)

    def broker(self, scenario: str, **changes: Any) -> BrokerConfig:
        """The BrokerConfig that probes a scenario; ``tls=``/``mqtt=`` dicts update those settings."""
        broker = self.brokers[scenario]
        tls_changes = changes.pop("tls", {})
        mqtt_changes = changes.pop("mqtt", {})
        return dataclasses.replace(
            broker,
            tls=dataclasses.replace(broker.tls, **tls_changes),
            mqtt=dataclasses.replace(broker.mqtt, **mqtt_changes),
            **changes,
        )

    def connections_logged(self, port: int) -> int:
        """How many TCP connections the lab's Mosquitto logged on ``port`` (``connection_messages true``)."""
        marker = f" on port {port}."
        return sum(m.log_path.read_text().count(marker) for m in self.mosquitto if m.running)

    async def connections_since(self, port: int, before: int, expected: int) -> int:
        """The connections logged on ``port`` since ``before``: Mosquitto writes its line after the accept,
        later still on a loaded machine, so wait (at most 5 s) until ``expected`` are in, then a little
        more for any beyond them."""
        for _ in range(100):  # a file polled: nothing to wait on
            if self.connections_logged(port) - before >= expected:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        return self.connections_logged(port) - before

    def config_yaml(self, *scenarios: str, interval: str = "2s", timeout: str = "1s") -> str:
        """A config file text probing these scenarios (names = scenario names)."""
        lines = ["defaults:", f"  interval: {interval}", f"  timeout: {timeout}", "brokers:"]
        for name in scenarios:
            broker = self.brokers[name]
            lines += [f"  - name: {name}", f"    address: '{broker.address}'"]
            if broker.broker_kind:
                lines.append(f"    broker_kind: {broker.broker_kind}")
            lines.append("    tls:")
            tls = dataclasses.asdict(broker.tls)
            for key, value in tls.items():
                if value and key != "alpn":
                    lines.append(f"      {key}: '{value}'")
            if not any(tls.values()):
                lines[-1] = "    tls: {}"
            lines.append("    mqtt:")
            lines.append(f"      protocol: '{broker.mqtt.protocol}'")
            if broker.mqtt.username:
                lines.append(f"      username: '{broker.mqtt.username}'")
            if broker.mqtt.password and broker.mqtt.password.reveal() == PASSWORD:
                lines.append("      password: '${MQTT_TEST_PASSWORD}'")
            elif broker.mqtt.password:
                lines.append(f"      password: '{broker.mqtt.password.reveal()}'")
        return "\n".join(lines) + "\n"


def _serve_directory(directory: Path) -> tuple[http.server.ThreadingHTTPServer, int]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(directory), **kwargs)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


def build_lab(directory: Path) -> Lab:  # noqa: PLR0915 - one statement per lab scenario
    if mosquitto_binary() is None:
        pytest.fail(
            "mosquitto is not installed: run `bash scripts/ensure-system-packages.sh` (make test does)"
        )
    now = dt.datetime.now(UTC)
    pki = Pki(directory / "pki")
    root = pki.root("Lab Root CA")
    intermediate = pki.intermediate("Lab Intermediate CA", root)
    other_root = pki.root("Other Root CA")
    client_root = pki.root("Lab Client CA")
    lab = Lab(
        pki,
        root,
        intermediate,
        other_root,
        client_root,
        client=pki.leaf("exporter-client", client_root, client=True, dns_names=(), ip_addresses=()),
    )

    aia_dir = directory / "aia"
    aia_dir.mkdir()
    (aia_dir / "intermediate.der").write_bytes(intermediate.cert.public_bytes(_der()))
    aia_server, aia_port = _serve_directory(aia_dir)
    lab.servers.append(aia_server)

    def leaf(name: str, **kwargs: Any) -> Issued:
        return pki.leaf(name, kwargs.pop("issuer", intermediate), **kwargs)

    good = leaf("good")
    chained = {
        "good": good,
        "expiring": leaf("expiring", not_after=now + dt.timedelta(days=20)),
        "expired": leaf("expired", not_after=now - dt.timedelta(days=3)),
        "not_yet_valid": leaf("not-yet-valid", not_before=now + dt.timedelta(days=2)),
        "wrong_host": leaf("wrong-host", dns_names=("other.example.com",), ip_addresses=()),
        "expired_wrong_host": leaf(
            "expired-wrong-host",
            dns_names=("other.example.com",),
            ip_addresses=(),
            not_after=now - dt.timedelta(days=1),
        ),
    }
    listeners = [
        Listener(name, cert=issued.chain_path(intermediate), key=issued.key_path)
        for name, issued in chained.items()
    ]
    self_signed = pki.leaf("self-signed", None)
    unknown = pki.leaf("unknown-ca", other_root)
    missing = leaf("missing-intermediate")
    missing_aia = leaf("missing-aia", aia_ca_issuers_url=f"http://127.0.0.1:{aia_port}/intermediate.der")
    weak_key = leaf("weak-key", key="rsa1024")
    weak_signature = pki.leaf_sha1("weak-signature", intermediate)
    password_file = make_password_file(directory / "passwords", {"monitor": PASSWORD})
    listeners += [
        Listener("self_signed", cert=self_signed.cert_path, key=self_signed.key_path),
        Listener("unknown_ca", cert=unknown.cert_path, key=unknown.key_path),
        Listener("missing_intermediate", cert=missing.cert_path, key=missing.key_path),
        Listener("missing_aia", cert=missing_aia.cert_path, key=missing_aia.key_path),
        Listener(
            "weak_key",
            cert=weak_key.chain_path(intermediate),
            key=weak_key.key_path,
            ciphers="DEFAULT:@SECLEVEL=0",
        ),
        Listener(
            "weak_signature",
            cert=weak_signature.chain_path(intermediate),
            key=weak_signature.key_path,
            ciphers="DEFAULT:@SECLEVEL=0",
        ),
        Listener(
            "mtls",
            cert=good.chain_path(intermediate),
            key=good.key_path,
            cafile=client_root.cert_path,
            require_certificate=True,
        ),
        Listener(
            "password", cert=good.chain_path(intermediate), key=good.key_path, password_file=password_file
        ),
        Listener("plaintext"),
    ]
    main = Mosquitto(listeners, directory / "mosquitto-main")
    main.start()
    lab.mosquitto.append(main)
    tls12 = Mosquitto(
        [Listener("tls12", cert=good.chain_path(intermediate), key=good.key_path)],
        directory / "mosquitto-tls12",
        tls12_only=True,
    )
    tls12.start()
    lab.mosquitto.append(tls12)

    ca = str(root.cert_path)
    trusting = TlsSettings(ca_file=ca, server_name="localhost")

    def add(name: str, address: str, tls: TlsSettings = trusting, **mqtt: Any) -> None:
        host, _, port = address.rpartition(":")
        lab.brokers[name] = BrokerConfig(
            name=name,
            target=Target(host.strip("[]"), int(port)),
            interval=60.0,
            timeout=2.0,
            tls=tls,
            mqtt=MqttSettings(**mqtt),
            broker_kind="mosquitto",  # the lab's brokers are Mosquitto (and servers that stand in for it)
        )

    for listener in listeners:
        add(listener.name, main.address(listener.name))
    add("tls12", tls12.address("tls12"))
    add(
        "mtls_with_cert",
        main.address("mtls"),
        dataclasses.replace(trusting, cert_file=str(lab.client.cert_path), key_file=str(lab.client.key_path)),
    )
    add("password_ok", main.address("password"), username="monitor", password=Secret(PASSWORD))
    add("password_wrong", main.address("password"), username="monitor", password=Secret("wrong"))
    add(
        "incomplete_chain",
        main.address("missing_intermediate"),
        dataclasses.replace(trusting, intermediates_file=str(intermediate.cert_path)),
    )

    # What Mosquitto will not do.
    def hostile(name: str, server: Any) -> None:
        lab.servers.append(server)
        add(name, server.address)

    hostile("silent", HostileServer(silent).start())
    hostile("garbage", HostileServer(garbage()).start())
    hostile("reset", HostileServer(reset_on_accept).start())
    cert, key = good.chain_path(intermediate), good.key_path
    hostile("tls_silent", HostileServer(after_tls(lambda _: None), cert=cert, key=key).start())
    hostile("tls_garbage", HostileServer(after_tls(lambda _: b"\x30\x02garbage"), cert=cert, key=key).start())
    hostile("tls_close", HostileServer(after_tls(lambda _: None, close=True), cert=cert, key=key).start())
    hostile(
        "tls_huge_length",
        HostileServer(after_tls(lambda _: b"\x20" + encode_varint(200_000_000)), cert=cert, key=key).start(),
    )
    hostile(
        "tls_v5_connack",
        HostileServer(after_tls(lambda _: b"\x20\x03\x00\x00\x00"), cert=cert, key=key).start(),
    )
    black_hole = BlackHole()
    lab.servers.append(black_hole)
    add("black_hole", black_hole.address)
    # Bound but never listening: connects are refused, and no other listener can take the port
    # (a port merely freed was sometimes reused by a test's exporter, which then "answered" it).
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    lab.servers.append(closed)
    add("closed", f"127.0.0.1:{closed.getsockname()[1]}")
    return lab


def _der() -> Any:
    from cryptography.hazmat.primitives.serialization import Encoding

    return Encoding.DER


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    built = build_lab(tmp_path_factory.mktemp("lab"))
    yield built
    for broker in built.mosquitto:
        broker.stop()
    for server in built.servers:
        for method in ("stop", "close", "shutdown"):
            if hasattr(server, method):
                getattr(server, method)()
                break


@pytest.fixture(scope="session")
def transport(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Transport]:
    """The Mosquitto of the transport tests (tests/lab/transport.py): test_transport, test_roundtrip,
    test_addresses and test_proxy share it, so a worker starts it once."""
    started = start_transport(lab, tmp_path_factory.mktemp("transport"))
    try:
        yield started
    finally:
        started.mosquitto.stop()


# --------------------------------------------------------------------------------------------------
# The exporter as users run it: a real process.


@dataclass
class ExporterProcess:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def get(self, path: str, timeout: float = 5) -> str:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=timeout) as response:
            return str(response.read().decode())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        return stop_process(self.process)


def start_exporter(
    config: Path, workdir: Path, *extra: str, env: dict[str, str] | None = None
) -> ExporterProcess:
    log_path = workdir / f"exporter-{time.monotonic_ns()}.log"
    process, url = start_exporter_process(
        config, log_path, *extra, env={"MQTT_TEST_PASSWORD": PASSWORD, **(env or {})}, cwd=ROOT
    )
    return ExporterProcess(process, url, log_path)


def configured(intervals: dict[str, float]) -> dict[str, BrokerConfig]:
    """Brokers with these names and intervals, for a ResultStore that needs a configuration."""
    return {
        name: BrokerConfig(
            name, Target(f"{name}.example", 8883), interval=seconds, timeout=min(seconds, 10.0)
        )
        for name, seconds in intervals.items()
    }


def wait_for(predicate: Any, timeout: float = 15, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `bash scripts/ensure-system-packages.sh` (make test does)"
        )
    return path


def promtool_check(text: str) -> None:
    """``promtool check metrics`` accepts the exposition ``text`` (its complaints are the failure)."""
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def cert_facts(**changes: Any) -> CertFacts:
    """The facts of a plausible EC P-256 leaf, for pure tests; override what the test is about."""
    base = CertFacts(
        fingerprint_sha256="ab" * 32,
        subject="CN=leaf",
        issuer="CN=Some CA",
        serial="1",
        not_before=0.0,
        not_after=2e9,
        dns_names=("localhost",),
        ip_addresses=(),
        common_name="leaf",
        key="EC-P256",
        key_bits=256,
        signature_algorithm="ecdsa-with-SHA256",
        signature_hash="sha256",
        is_ca=False,
        self_issued=False,
    )
    return dataclasses.replace(base, **changes)


# --------------------------------------------------------------------------------------------------
# The configuration tests (tests/test_config_*.py; their other helpers are in tests/config_helpers.py).


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Real PEM files: the loader checks that OpenSSL can use the TLS files it is given."""
    pki = Pki(tmp_path_factory.mktemp("pems"))
    root = pki.root("Config Test CA")
    client = pki.leaf("client", root, client=True)
    key = client.key_path.read_bytes()
    return {
        "ca.pem": root.cert_path.read_bytes(),
        "chain.pem": root.cert_path.read_bytes(),
        "client.pem": client.cert_path.read_bytes() + key,  # certificate with its key: usable alone
        "client.key": key,
    }
