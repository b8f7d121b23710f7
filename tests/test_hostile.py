"""Hostile and broken brokers: each ends in a classified failure within the timeout, never a crash,
a stuck task, a leaked socket, or a delay to other brokers."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import ProbeResult
from tests.conftest import ExporterProcess, Lab, promtool_check, start_exporter, wait_for
from tests.lab.hostile import HostileServer, after_tls, endless, reset_mid_handshake, slow_bytes


def broker(name: str, address: str, ca: Path | None = None, timeout: float = 1.5, **tls: Any) -> BrokerConfig:
    host, _, port = address.rpartition(":")
    return BrokerConfig(
        name=name,
        target=Target(host.strip("[]"), int(port)),
        timeout=timeout,
        tls=TlsSettings(ca_file=str(ca) if ca else None, server_name="localhost", **tls),
    )


@pytest.fixture(scope="module")
def hostile(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, BrokerConfig]]:
    directory = tmp_path_factory.mktemp("hostile")
    pki = Pki(directory / "pki")
    ca = lab.root.cert_path
    good = lab.pki.leaf("hostile-good", lab.intermediate)
    cert, key = good.chain_path(lab.intermediate), good.key_path
    # A chain far larger than any real one: 400 intermediates.
    long_chain: list[Issued] = [pki.root("Deep Root")]
    for i in range(400):
        long_chain.append(pki.intermediate(f"Deep {i}", long_chain[-1], key="ec256"))
    deep_leaf = pki.leaf("deep", long_chain[-1])
    deep_chain = pki.bundle("deep-chain", deep_leaf, *reversed(long_chain))
    # Names full of junk: control characters, quotes, RTL override, a very long SAN list.
    junk = pki.leaf(
        'junk "\\ \u202e\u0000\n',
        lab.intermediate,
        dns_names=("localhost", *(f"host-{i}.example.com" for i in range(60))),
    )
    servers = [
        HostileServer(slow_bytes()),
        HostileServer(reset_mid_handshake),
        HostileServer(endless(), cert=cert, key=key),
        HostileServer(after_tls(lambda _: b"\x20\x02\x00\x00", close=True), cert=cert, key=key),
        HostileServer(after_tls(lambda _: None), cert=deep_chain, key=deep_leaf.key_path),
    ]
    for server in servers:
        server.start()
    mosquitto = Mosquitto(
        [Listener("junk", cert=junk.chain_path(lab.intermediate), key=junk.key_path)], directory / "mosquitto"
    )
    mosquitto.start()
    try:
        yield {
            "slow": broker("slow", servers[0].address),
            "reset_mid_handshake": broker("reset_mid_handshake", servers[1].address),
            "endless": broker("endless", servers[2].address, ca),
            "close_after_connack": broker("close_after_connack", servers[3].address, ca),
            "deep_chain": broker("deep_chain", servers[4].address, ca),
            "junk_names": broker("junk_names", mosquitto.address("junk"), ca),
        }
    finally:
        mosquitto.stop()
        for server in servers:
            server.stop()


def failure(result: ProbeResult) -> tuple[str, str] | None:
    return (result.failure.stage.value, result.failure.reason.value) if result.failure else None


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("slow", {("tls", "timeout")}),
        ("reset_mid_handshake", {("tls", "handshake_failure")}),
        ("endless", {("mqtt", "protocol_error")}),
        ("close_after_connack", {None}),
        (
            "deep_chain",
            {
                ("tls", "certificate_too_large"),
                ("tls", "protocol_error"),
                ("tls", "handshake_failure"),
                ("trust", "untrusted"),
            },
        ),
        ("junk_names", {None}),
    ],
)
async def test_hostile_broker_is_classified_in_time(
    hostile: dict[str, BrokerConfig], name: str, expected: set[tuple[str, str] | None]
) -> None:
    target = hostile[name]
    started = time.monotonic()
    result = await Prober().probe(target)
    assert time.monotonic() - started < target.timeout + 0.5
    assert failure(result) in expected, result.failure


async def test_a_flooding_broker_stops_when_the_probe_goes(
    hostile: dict[str, BrokerConfig], caplog: pytest.LogCaptureFixture
) -> None:
    """Probe after probe of the endless server ends the same way, in time: its flood stops with the
    connection (it wrote all 64 MiB into the lost connection, 16,000 warnings a probe, and starved the
    next handshakes on the lab's thread into timeouts)."""
    for _ in range(3):
        result = await Prober().probe(hostile["endless"])
        assert failure(result) == ("mqtt", "protocol_error")
    await asyncio.sleep(0.2)
    assert not [record for record in caplog.records if "socket.send() raised" in record.getMessage()]


async def test_no_socket_leaks_after_many_hostile_probes(lab: Lab, hostile: dict[str, BrokerConfig]) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    prober = Prober()
    targets = [*hostile.values(), lab.broker("silent"), lab.broker("garbage"), lab.broker("expired")]
    targets = [dataclasses.replace(t, timeout=0.5) for t in targets if t.name != "slow"]
    await asyncio.gather(*(prober.probe(t) for t in targets))  # warm-up: caches, contexts
    before = open_fds()
    for _ in range(3):
        await asyncio.gather(*(prober.probe(t) for t in targets))
    await asyncio.sleep(0.2)
    assert open_fds() <= before + 2
    leftover = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert not leftover, leftover


async def test_a_black_hole_does_not_delay_other_brokers(lab: Lab) -> None:
    prober = Prober()
    holes = [lab.broker("black_hole", name=f"hole{i}", timeout=3.0) for i in range(10)]
    good = lab.broker("good", timeout=3.0)
    tasks = [asyncio.create_task(prober.probe(b)) for b in holes]
    result = await prober.probe(good)
    assert result.success
    # The good broker's result is in while every black hole is still waiting for its own deadline.
    assert not any(task.done() for task in tasks)
    outcomes = await asyncio.gather(*tasks)
    assert {(r.failure.stage.value, r.failure.reason.value) for r in outcomes if r.failure} == {
        ("connect", "timeout")
    }


@pytest.fixture(scope="module")
def junk_exporter(
    hostile: dict[str, BrokerConfig], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ExporterProcess]:
    workdir = tmp_path_factory.mktemp("junk-exporter")
    junk = hostile["junk_names"]
    config = workdir / "config.yaml"
    config.write_text(
        "defaults: {interval: 2s, timeout: 1s}\nbrokers:\n"
        f"  - name: junk\n    address: '{junk.address}'\n"
        f"    tls: {{ca_file: '{junk.tls.ca_file}', server_name: localhost}}\n"
    )
    process = start_exporter(config, workdir)
    try:
        wait_for(lambda: 'mqtt_broker_probe_success{broker="junk"}' in process.get("/metrics"))
        yield process
    finally:
        process.stop()


def test_junk_certificate_names_are_escaped_and_bounded(junk_exporter: ExporterProcess) -> None:
    text = junk_exporter.get("/metrics")
    promtool_check(text)
    info = [
        line
        for line in text.splitlines()
        if line.startswith("mqtt_broker_cert_info{") and 'position="0"' in line
    ]
    assert info and '\\"' in info[0] and "\\n" in info[0]
    assert all(len(line) < 2000 for line in info)


def test_exporter_shuts_down_quickly_on_sigterm(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good", "black_hole", "silent", interval="10s", timeout="9s"))
    process = start_exporter(config, tmp_path)
    wait_for(lambda: 'mqtt_broker_probe_success{broker="good"}' in process.get("/metrics"))
    started = time.monotonic()
    process.process.terminate()
    code = process.process.wait(10)
    assert code == 0
    assert time.monotonic() - started < 2.5  # in-flight probes (black hole, silent) are cancelled
