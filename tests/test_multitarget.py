"""Multi-target mode: GET /probe?target=...&module=... against real brokers, like blackbox_exporter."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics

from mqtt_cert_exporter.config import Config, ModuleConfig, TlsSettings, parse_config
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.web.multitarget import (
    DEFAULT_MODULE,
    SCRAPE_TIMEOUT_HEADER,
    AllowList,
    module_named,
    probe_handler,
    probe_timeout,
)
from tests.conftest import ROOT, ExporterProcess, Lab, promtool_check, start_exporter
from tests.lab.scrape import Samples, samples, value

LOOPBACK = r"127\.0\.0\.1:[0-9]+"


def names(found: Samples) -> set[str]:
    return {name for name, _ in found}


# --------------------------------------------------------------------------------------------------
# Pure parts


def test_timeout_is_the_module_timeout_without_the_header() -> None:
    assert probe_timeout(10.0, None) == 10.0
    assert probe_timeout(10.0, "") == 10.0


def test_timeout_leaves_half_a_second_of_the_scrape_timeout() -> None:
    assert probe_timeout(10.0, "5") == 4.5
    assert probe_timeout(3.0, "10") == 3.0  # the module's own timeout is shorter
    assert probe_timeout(10.0, "9.75") == 9.25


def test_timeout_under_a_second_keeps_half_of_it() -> None:
    assert probe_timeout(10.0, "0.6") == pytest.approx(0.3)
    assert probe_timeout(10.0, "1") == pytest.approx(0.5)


@pytest.mark.parametrize("header", ["abc", "0", "-1", "nan", "inf"])
def test_timeout_header_must_be_positive_seconds(header: str) -> None:
    with pytest.raises(ValueError, match=SCRAPE_TIMEOUT_HEADER):
        probe_timeout(10.0, header)


def test_allow_list_is_off_when_empty_and_fully_anchored() -> None:
    assert not AllowList().enabled
    allow = AllowList([LOOPBACK, r"mqtt-[a-z]+\.example\.com:8883"])
    assert allow.enabled
    assert allow.allows("127.0.0.1:8883")
    assert allow.allows("mqtt-plant.example.com:8883")
    assert not allow.allows("127.0.0.10:8883")
    assert not allow.allows("x127.0.0.1:8883")
    assert not allow.allows("mqtt-plant.example.com:8883.evil.net:1")
    assert not allow.allows("10.0.0.1:22")


def test_allow_list_rejects_invalid_patterns() -> None:
    with pytest.raises(ValueError, match=r"invalid --probe.allowed-target pattern '\(unclosed'"):
        AllowList(["(unclosed"])


def test_default_module_is_built_in_unless_configured() -> None:
    assert module_named(Config(), DEFAULT_MODULE) == ModuleConfig()
    custom = ModuleConfig(timeout=3.0)
    assert module_named(Config(modules=(("default", custom),)), DEFAULT_MODULE) == custom
    assert module_named(Config(), "nope") is None


# --------------------------------------------------------------------------------------------------
# The handler in-process, against the lab's real Mosquitto brokers


def lab_config(lab: Lab) -> Config:
    trusting = TlsSettings(ca_file=str(lab.root.cert_path), server_name="localhost")
    return Config(
        modules=(
            ("lab", ModuleConfig(timeout=2.0, tls=trusting)),
            ("slow", ModuleConfig(timeout=10.0, tls=trusting)),
        )
    )


Client = TestClient[web.Request, web.Application]


async def client_for(
    config: Callable[[], Config], allowed: list[str], concurrency: int = 16
) -> AsyncIterator[Client]:
    app = web.Application()
    app.router.add_get("/probe", probe_handler(config, Prober(), allowed, concurrency=concurrency))
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        yield client


@pytest.fixture
async def client(lab: Lab) -> AsyncIterator[Client]:
    config = lab_config(lab)
    async for made in client_for(lambda: config, [LOOPBACK]):
        yield made


async def get(client: Client, headers: dict[str, str] | None = None, **params: str) -> tuple[int, str]:
    async with client.get("/probe", params=params, headers=headers or {}) as response:
        return response.status, await response.text()


async def test_probe_is_off_without_allowed_targets(lab: Lab) -> None:
    async for client in client_for(lambda: lab_config(lab), []):
        status, text = await get(client, target=lab.broker("good").address, module="lab")
        assert status == 403
        assert "--probe.allowed-target" in text


async def test_missing_target_is_a_bad_request(client: Client) -> None:
    status, text = await get(client, module="lab")
    assert status == 400
    assert "missing parameter 'target'" in text


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("127.0.0.1:99999", "port must be 1-65535"),
        ("mqtt://127.0.0.1:1883", "not TLS"),
        ("user:pw@127.0.0.1:8883", "credentials do not belong in the address"),
        ("x" * 600, "longer than"),
    ],
)
async def test_invalid_target_is_a_bad_request(client: Client, target: str, message: str) -> None:
    status, text = await get(client, target=target, module="lab")
    assert status == 400
    assert message in text
    assert "pw" not in text


@pytest.mark.parametrize("target", ["10.0.0.1:8883", "localhost:8883", "127.0.0.1"])
async def test_target_outside_the_allow_list_is_forbidden(client: Client, target: str) -> None:
    # "127.0.0.1" alone is probed as 127.0.0.1:8883, which the loopback pattern allows; check that.
    status, text = await get(client, target=target, module="lab")
    if target == "127.0.0.1":
        assert status == 200
        assert 'broker="127.0.0.1:8883"' in text
        return
    assert status == 403
    assert "is not allowed" in text


async def test_unknown_module_is_a_bad_request_listing_the_modules(client: Client, lab: Lab) -> None:
    status, text = await get(client, target=lab.broker("good").address, module="nope")
    assert status == 400
    assert "unknown module 'nope'; modules: default, lab, slow" in text


async def test_bad_scrape_timeout_header_is_a_bad_request(client: Client, lab: Lab) -> None:
    status, text = await get(
        client, {SCRAPE_TIMEOUT_HEADER: "soon"}, target=lab.broker("good").address, module="lab"
    )
    assert status == 400
    assert SCRAPE_TIMEOUT_HEADER in text


async def test_good_broker(client: Client, lab: Lab) -> None:
    target = lab.broker("good").address
    status, text = await get(client, target=target, module="lab")
    assert status == 200
    found = samples(text)
    assert value(found, "mqtt_broker_probe_success", broker=target) == 1
    assert value(found, "mqtt_broker_tls_trusted", broker=target) == 1
    assert value(found, "mqtt_broker_connect_success", broker=target) == 1
    assert value(found, "mqtt_broker_tls_version_info", broker=target, version="TLSv1.3") == 1
    days = value(found, "mqtt_broker_cert_expires_in_seconds", broker=target, position="0")
    assert days is not None and 89 * 86400 < days < 91 * 86400
    # One request cannot count failures or know Prometheus's interval: those families stay empty.
    assert "mqtt_broker_probe_failures_total" not in names(found)
    assert "mqtt_broker_probe_interval_seconds" not in names(found)
    assert not any(name.startswith("mqtt_cert_exporter_") for name in names(found))


async def test_openmetrics_and_gzip_when_asked(client: Client, lab: Lab) -> None:
    """As Prometheus asks: OpenMetrics first, gzip; the body parses as OpenMetrics with the same samples."""
    target = lab.broker("good").address
    headers = {
        "Accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        "Accept-Encoding": "gzip",
    }
    async with client.get("/probe", params={"target": target, "module": "lab"}, headers=headers) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
        assert response.headers["Content-Encoding"] == "gzip"
        text = await response.text()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(text)}  # type: ignore[no-untyped-call]  # raises on any violation
    assert families["mqtt_broker_probe_success"].samples[0].value == 1
    assert families["mqtt_broker_probe_failures"].type == "counter"  # OpenMetrics names it without _total


async def test_expired_and_untrusted_brokers_keep_their_certificate_metrics(client: Client, lab: Lab) -> None:
    for scenario, problem in (("expired", "expired"), ("unknown_ca", "unknown_ca")):
        target = lab.broker(scenario).address
        status, text = await get(client, target=target, module="lab")
        assert status == 200
        found = samples(text)
        assert value(found, "mqtt_broker_probe_success", broker=target) == 0
        assert value(found, "mqtt_broker_tls_trusted", broker=target) == 0
        assert value(found, "mqtt_broker_tls_trust_problem", broker=target, problem=problem) == 1
        assert (
            value(found, "mqtt_broker_probe_failure", broker=target, stage="trust", reason="untrusted") == 1
        )
        assert value(found, "mqtt_broker_cert_not_after_timestamp_seconds", broker=target, position="0")
        assert value(found, "mqtt_broker_connect_success", broker=target) == 1  # broker up, cert bad
    expired = samples((await get(client, target=lab.broker("expired").address, module="lab"))[1])
    left = value(
        expired, "mqtt_broker_cert_expires_in_seconds", broker=lab.broker("expired").address, position="0"
    )
    assert left is not None and left < -2 * 86400


async def test_default_module_uses_the_system_trust_store(client: Client, lab: Lab) -> None:
    target = lab.broker("good").address
    status, text = await get(client, target=target)  # no module: "default"
    assert status == 200
    found = samples(text)
    assert value(found, "mqtt_broker_probe_success", broker=target) == 0
    assert value(found, "mqtt_broker_tls_trust_problem", broker=target, problem="unknown_ca") == 1


async def test_scrape_timeout_header_bounds_the_probe(client: Client, lab: Lab) -> None:
    target = lab.broker("black_hole").address
    started = time.monotonic()
    status, text = await get(client, {SCRAPE_TIMEOUT_HEADER: "1.2"}, target=target, module="slow")
    elapsed = time.monotonic() - started
    assert status == 200
    assert elapsed < 5, elapsed  # bounded by the header (1.2 s - 0.5 s), far from the module's 10 s
    found = samples(text)
    # The probe's own clock: it ran for the header's budget, not the module's.
    total = value(found, "mqtt_broker_probe_duration_seconds", broker=target, phase="total")
    assert total is not None and 0.6 <= total < 1.0, total
    assert value(found, "mqtt_broker_probe_failure", broker=target, stage="connect", reason="timeout") == 1


async def test_probes_beyond_the_concurrency_wait_then_give_up(lab: Lab) -> None:
    target = lab.broker("black_hole").address
    config = lab_config(lab)
    async for client in client_for(lambda: config, [LOOPBACK], concurrency=1):
        first = asyncio.create_task(get(client, {SCRAPE_TIMEOUT_HEADER: "2.5"}, target=target, module="slow"))
        await asyncio.sleep(0.2)
        status, text = await get(client, {SCRAPE_TIMEOUT_HEADER: "1"}, target=target, module="slow")
        assert status == 503
        assert "too many probes in flight" in text
        assert (await first)[0] == 200


async def test_modules_follow_the_current_config(lab: Lab) -> None:
    current = [Config()]
    async for client in client_for(lambda: current[0], [LOOPBACK]):
        target = lab.broker("good").address
        assert (await get(client, target=target, module="lab"))[0] == 400
        current[0] = lab_config(lab)  # what a reload does
        status, text = await get(client, target=target, module="lab")
        assert status == 200
        assert value(samples(text), "mqtt_broker_probe_success", broker=target) == 1


async def test_modules_come_from_the_config_file(lab: Lab, tmp_path: Path) -> None:
    config = parse_config(
        f"""
defaults:
  timeout: 3s
modules:
  lab:
    tls:
      ca_file: {lab.root.cert_path}
      server_name: localhost
    mqtt:
      protocol: "3.1.1"
""",
        base_dir=str(tmp_path),
    )
    async for client in client_for(lambda: config, [LOOPBACK]):
        target = lab.broker("good").address
        status, text = await get(client, target=target, module="lab")
        assert status == 200
        assert value(samples(text), "mqtt_broker_probe_success", broker=target) == 1


async def test_debug_shows_the_outcome_in_words(client: Client, lab: Lab) -> None:
    status, text = await get(client, target=lab.broker("expired").address, module="lab", debug="true")
    assert status == 200
    assert "result: failed at trust/untrusted" in text
    assert "problem: expired:" in text
    assert "certificate 0: O=mqtt-cert-exporter lab,CN=expired (issuer " in text
    assert "mqtt_broker_probe_success" in text


# --------------------------------------------------------------------------------------------------
# The real process: the flag, the route, the exposition format


@pytest.fixture(scope="module")
def exporter(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    workdir = tmp_path_factory.mktemp("multitarget")
    config = workdir / "config.yaml"
    config.write_text(
        f"modules:\n  lab:\n    timeout: 2s\n    tls:\n      ca_file: '{lab.root.cert_path}'\n"
        "      server_name: localhost\n"
    )
    process = start_exporter(config, workdir, f"--probe.allowed-target={LOOPBACK}")
    try:
        yield process
    finally:
        process.stop()


@pytest.mark.slow
def test_the_exporter_serves_probe_and_passes_promtool(exporter: ExporterProcess, lab: Lab) -> None:
    target = lab.broker("good").address
    text = exporter.get(f"/probe?target={target}&module=lab")
    assert value(samples(text), "mqtt_broker_probe_success", broker=target) == 1
    promtool_check(text)
    assert 'msg="multi-target probing enabled"' in exporter.log()


@pytest.mark.slow
def test_the_exporter_refuses_other_targets(exporter: ExporterProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        exporter.get("/probe?target=192.0.2.1:8883&module=lab")
    assert caught.value.code == 403
    with urllib.request.urlopen(exporter.url + "/-/healthy", timeout=5) as response:
        assert response.status == 200  # and the rest of the exporter is untouched


@pytest.mark.slow
def test_an_invalid_pattern_stops_the_exporter_at_start(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("brokers: []\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtt_cert_exporter",
            f"--config.file={config}",
            "--probe.allowed-target=(oops",
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert run.returncode == 2
    assert b"--probe.allowed-target: invalid regular expression '(oops'" in run.stderr
