"""The certificate's whole life (issue 7), on real Mosquitto brokers: the certificate file renewed on
disk but not reloaded, the trust anchor, the exporter's own client certificate, CRL revocation and the
lints. None of it may change probe_success."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import http.server
import logging
import os
import shutil
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.serialization import Encoding
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from mqtt_cert_exporter.certs.parse import facts_of
from mqtt_cert_exporter.collector import broker_families
from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import (
    Lint,
    ProbeResult,
    RevocationStatus,
)
from tests.conftest import Lab, promtool_check, start_exporter, wait_for

UTC = dt.UTC


class CountingServer:
    """Serves files from a directory over HTTP on loopback and counts the requests per path."""

    def __init__(self, directory: Path) -> None:
        self.hits: Counter[str] = Counter()
        hits = self.hits

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(directory), **kwargs)

            def do_GET(self) -> None:
                hits[self.path] += 1
                super().do_GET()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Life:
    directory: Path
    pki: Pki
    root: Issued
    intermediate: Issued
    crl_server: CountingServer
    leaves: dict[str, Issued]
    served: Mosquitto
    main: Mosquitto
    brokers: dict[str, BrokerConfig] = field(default_factory=dict)

    def broker(self, name: str, **tls: Any) -> BrokerConfig:
        broker = self.brokers[name]
        return dataclasses.replace(broker, tls=dataclasses.replace(broker.tls, **tls))


def _copy(issued: Issued, intermediate: Issued, cert: Path, key: Path) -> None:
    """Write a full chain (leaf + intermediate, as certbot's fullchain.pem) and its key."""
    cert.write_bytes(issued.cert_path.read_bytes() + intermediate.cert_path.read_bytes())
    key.write_bytes(issued.key_path.read_bytes())
    key.chmod(0o644)


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Life]:
    directory = tmp_path_factory.mktemp("life")
    pki = Pki(directory / "pki")
    crl_dir = directory / "crl"
    crl_dir.mkdir()
    crl_server = CountingServer(crl_dir)
    root = pki.root("Life Root CA")
    intermediate = pki.intermediate(
        "Life Intermediate CA", root, crl_distribution_points=[crl_server.url("root.crl")]
    )
    now = dt.datetime.now(UTC)

    def leaf(name: str, **kwargs: Any) -> Issued:
        return pki.leaf(name, intermediate, **kwargs)

    leaves = {
        "a": leaf("renewable-a"),
        "b": leaf("renewable-b"),
        "revoked": leaf("revoked", crl_distribution_points=[crl_server.url("intermediate.crl")]),
        "not_revoked": leaf("not-revoked", crl_distribution_points=[crl_server.url("intermediate.crl")]),
        "crl_missing": leaf("crl-missing", crl_distribution_points=[crl_server.url("missing.crl")]),
        "crl_stale": leaf("crl-stale", crl_distribution_points=[crl_server.url("stale.crl")]),
        "crl_forged": leaf("crl-forged", crl_distribution_points=[crl_server.url("forged.crl")]),
        "no_san": leaf("no-san", dns_names=(), ip_addresses=(), common_name="localhost"),
        "long": leaf("long-lived", days=825),
        "late": leaf("renew-late", not_before=now - dt.timedelta(days=70), days=90),
        "good": leaf("good"),
    }
    # CRLs: the intermediate's revokes one leaf; the root's revokes nothing; a stale one; a forged one.
    pki.crl("intermediate", intermediate, revoked=[leaves["revoked"]])
    pki.crl("root", root, pem=True)
    pki.crl(
        "stale",
        intermediate,
        last_update=now - dt.timedelta(days=10),
        next_update=now - dt.timedelta(days=3),
    )
    pki.crl("forged", intermediate, revoked=[leaves["crl_forged"]], signer=pki.root("Forger"))
    for name in ("intermediate", "root", "stale", "forged"):
        shutil.copy(pki.directory / f"{name}.crl", crl_dir / f"{name}.crl")

    # The broker whose certificate files get renewed (its own process: the tests send it SIGHUP).
    inplace = directory / "inplace"
    inplace.mkdir()
    _copy(leaves["a"], intermediate, inplace / "server.crt", inplace / "server.key")
    archive, live = directory / "letsencrypt/archive/example", directory / "letsencrypt/live/example"
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    _copy(leaves["a"], intermediate, archive / "cert1.pem", archive / "privkey1.pem")
    (live / "cert.pem").symlink_to("../../archive/example/cert1.pem")
    (live / "privkey.pem").symlink_to("../../archive/example/privkey1.pem")
    served = Mosquitto(
        [
            Listener("inplace", cert=inplace / "server.crt", key=inplace / "server.key"),
            Listener("certbot", cert=live / "cert.pem", key=live / "privkey.pem", keep_symlinks=True),
            Listener("websockets", cert=inplace / "server.crt", key=inplace / "server.key", websockets=True),
        ],
        directory / "mosquitto-served",
    )
    served.start()

    good = leaves["good"]
    listeners = [
        Listener(name, cert=leaves[name].chain_path(intermediate), key=leaves[name].key_path)
        for name in (
            "revoked",
            "not_revoked",
            "crl_missing",
            "crl_stale",
            "crl_forged",
            "no_san",
            "long",
            "late",
        )
    ]
    listeners += [
        Listener("good", cert=good.chain_path(intermediate), key=good.key_path),
        Listener("root_included", cert=good.chain_path(intermediate, root), key=good.key_path),
        Listener("out_of_order", cert=good.chain_path(root, intermediate), key=good.key_path),
        Listener(
            "legacy",
            cert=good.chain_path(intermediate),
            key=good.key_path,
            tls_version="tlsv1.1",
            ciphers="DEFAULT:@SECLEVEL=0",
        ),
    ]
    main = Mosquitto(listeners, directory / "mosquitto-main")
    main.start()
    built = Life(directory, pki, root, intermediate, crl_server, leaves, served, main)
    tls = TlsSettings(ca_file=str(root.cert_path), server_name="localhost")
    for process in (served, main):
        for listener in process._listeners:  # noqa: SLF001 - the lab's listener list
            if not listener.tls:
                continue
            address = f"wss://127.0.0.1:{process.port(listener.name)}/mqtt" if listener.websockets else ""
            target = (
                Target("127.0.0.1", process.port(listener.name), scheme="wss", path="/mqtt")
                if address
                else Target("127.0.0.1", process.port(listener.name))
            )
            built.brokers[listener.name] = BrokerConfig(
                name=listener.name, target=target, interval=60.0, timeout=3.0, tls=tls
            )
    yield built
    served.stop()
    main.stop()
    crl_server.close()


def fingerprint(issued: Issued) -> str:
    return facts_of(issued.cert.public_bytes(Encoding.DER)).fingerprint_sha256


async def probe(broker: BrokerConfig, prober: Prober | None = None) -> ProbeResult:
    return await (prober or Prober()).probe(broker)


# --------------------------------------------------------------------------------------------------
# Renewed on disk, still served old


async def test_renewed_in_place_serves_old_until_sighup(life: Life, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="mqtt_cert_exporter.probe")
    served_file = str(life.directory / "inplace" / "server.crt")
    broker = life.broker("inplace", served_cert_file=served_file)
    websockets = life.broker("websockets", served_cert_file=served_file)
    prober = Prober()

    first = await probe(broker, prober)
    assert first.success, first.failure
    assert first.served_file is not None and first.served_file.matches is True
    assert first.served_file.leaf is not None
    assert first.served_file.leaf.fingerprint_sha256 == fingerprint(life.leaves["a"])

    # certbot-less renewal: the new certificate and key are written over the old files, no reload
    _copy(
        life.leaves["b"],
        life.intermediate,
        life.directory / "inplace" / "server.crt",
        life.directory / "inplace" / "server.key",
    )
    stale = await probe(broker, prober)
    assert stale.success, "an outdated certificate is not a probe failure"
    assert stale.served_file is not None and stale.served_file.matches is False
    assert stale.served_file.served_fingerprint == fingerprint(life.leaves["a"])
    assert stale.served_file.leaf is not None
    assert stale.served_file.leaf.not_after == life.leaves["b"].cert.not_valid_after_utc.timestamp()
    warnings = [r for r in caplog.records if "serves an outdated certificate" in r.getMessage()]
    assert len(warnings) == 1 and vars(warnings[0])["renewed_on"] == life.leaves[
        "b"
    ].cert.not_valid_before_utc.strftime("%Y-%m-%d")
    await probe(broker, prober)
    assert len([r for r in caplog.records if "serves an outdated certificate" in r.getMessage()]) == 1

    # Mosquitto 2.0 reloads the certificates of its (non-websocket) listeners on SIGHUP
    os.kill(life.served.pid, signal.SIGHUP)
    deadline = time.monotonic() + 10
    while True:
        reloaded = await probe(broker, prober)
        assert reloaded.served_file is not None
        if reloaded.served_file.matches or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert reloaded.served_file.matches is True
    assert reloaded.served_file.served_fingerprint == fingerprint(life.leaves["b"])
    assert any("serves its certificate file" in r.getMessage() for r in caplog.records)

    # ... but not those of its websockets listeners (measured on 2.0.11): only a restart helps there
    over_ws = await probe(websockets, prober)
    assert over_ws.tls is not None and over_ws.tls.chain
    assert over_ws.served_file is not None and over_ws.served_file.matches is False
    assert over_ws.served_file.served_fingerprint == fingerprint(life.leaves["a"])


async def test_certbot_symlinks_are_followed(life: Life) -> None:
    live = life.directory / "letsencrypt/live/example"
    archive = life.directory / "letsencrypt/archive/example"
    broker = life.broker("certbot", served_cert_file=str(live / "cert.pem"))
    first = await probe(broker)
    assert first.served_file is not None and first.served_file.matches is True
    assert first.served_file.resolved_path == str(archive / "cert1.pem")

    # certbot renew: new numbered files in archive/, the live/ symlinks re-pointed
    _copy(life.leaves["b"], life.intermediate, archive / "cert2.pem", archive / "privkey2.pem")
    for link, target in (("cert.pem", "cert2.pem"), ("privkey.pem", "privkey2.pem")):
        (live / f"{link}.new").symlink_to(f"../../archive/example/{target}")
        os.replace(live / f"{link}.new", live / link)
    renewed = await probe(broker)
    assert renewed.served_file is not None and renewed.served_file.matches is False
    assert renewed.served_file.resolved_path == str(archive / "cert2.pem")

    os.kill(life.served.pid, signal.SIGHUP)
    result = await _probe_until(broker, lambda r: r.served_file is not None and bool(r.served_file.matches))
    assert result.served_file is not None and result.served_file.matches is True


async def _probe_until(broker: BrokerConfig, done: Any, timeout: float = 10) -> ProbeResult:
    deadline = time.monotonic() + timeout
    while True:
        result = await probe(broker)
        if done(result) or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.1)


async def test_unreadable_certificate_file_is_logged_not_a_failure(
    life: Life, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mqtt_cert_exporter.probe")
    dangling = tmp_path / "cert.pem"
    dangling.symlink_to(tmp_path / "archive" / "cert9.pem")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n")
    prober = Prober()
    for path, message in (
        (dangling, f"{dangling} leads to {tmp_path}/archive/cert9.pem, which does not exist"),
        (garbage, f"{garbage}: no PEM or DER certificate in it"),
    ):
        broker = life.broker("good", served_cert_file=str(path))
        result = await probe(broker, prober)
        assert result.success, result.failure
        assert result.served_file is not None
        assert result.served_file.error == message
        assert result.served_file.leaf is None and result.served_file.matches is None
        families = {f.name: f for f in broker_families([(result,)], {}, {}, time.time())}
        assert [s.value for s in families["mqtt_broker_served_cert_file_read_success"].samples] == [0.0]
        assert families["mqtt_broker_served_cert_matches_file"].samples == []
        assert families["mqtt_broker_served_cert_file_not_after_timestamp_seconds"].samples == []
        await probe(broker, prober)  # logged once per change, not every probe
        errors = [
            r for r in caplog.records if r.levelno == logging.ERROR and getattr(r, "error", "") == message
        ]
        assert len(errors) == 1


# --------------------------------------------------------------------------------------------------
# Certificates around the chain


async def test_trust_anchor_expiry(life: Life) -> None:
    result = await probe(life.broker("good"))
    assert result.tls is not None and result.tls.verdict.anchor is not None
    root_not_after = life.root.cert.not_valid_after_utc.timestamp()
    assert result.tls.verdict.anchor.not_after == root_not_after
    now = time.time()
    families = {f.name: f for f in broker_families([(result,)], {}, {}, now)}
    assert [s.value for s in families["mqtt_broker_cert_anchor_not_after_timestamp_seconds"].samples] == [
        root_not_after
    ]
    assert [s.value for s in families["mqtt_broker_cert_anchor_expires_in_seconds"].samples] == [
        root_not_after - now
    ]


async def test_own_client_certificate_expiry(lab: Lab, life: Life) -> None:
    result = await probe(lab.broker("mtls_with_cert"))
    assert result.success, result.failure
    assert result.client_cert is not None
    assert result.client_cert.not_after == lab.client.cert.not_valid_after_utc.timestamp()

    # Our own certificate lapsed: the broker rejects us, and the metric says why before anyone guesses.
    now = dt.datetime.now(UTC)
    lapsed = lab.pki.leaf(
        "exporter-client-lapsed",
        lab.client_root,
        client=True,
        dns_names=(),
        ip_addresses=(),
        not_after=now - dt.timedelta(days=1),
    )
    broker = lab.broker(
        "mtls_with_cert", tls={"cert_file": str(lapsed.cert_path), "key_file": str(lapsed.key_path)}
    )
    rejected = await probe(broker)
    assert rejected.failure is not None
    assert (rejected.failure.stage.value, rejected.failure.reason.value) == (
        "tls",
        "client_certificate_required",
    )
    assert rejected.client_cert is not None and rejected.client_cert.not_after < time.time()
    families = {f.name: f for f in broker_families([(rejected,)], {}, {}, time.time())}
    (sample,) = families["mqtt_cert_exporter_client_cert_expires_in_seconds"].samples
    assert sample.labels == {"broker": "mtls_with_cert"} and sample.value < -86000


# --------------------------------------------------------------------------------------------------
# Revocation


def revoked_series(result: ProbeResult) -> dict[str, float]:
    families = {f.name: f for f in broker_families([(result,)], {}, {}, time.time())}
    return {s.labels["position"]: s.value for s in families["mqtt_broker_cert_revoked"].samples}


def crl_success(result: ProbeResult) -> list[float]:
    families = {f.name: f for f in broker_families([(result,)], {}, {}, time.time())}
    return [s.value for s in families["mqtt_broker_crl_fetch_success"].samples]


async def test_revoked_leaf_is_reported_but_the_probe_succeeds(life: Life) -> None:
    result = await probe(life.broker("revoked"))
    assert result.success, "revocation is not part of probe_success"
    assert result.revocation is not None and result.revocation.fetch_success is True
    leaf, intermediate = result.revocation.checks
    assert leaf.status is RevocationStatus.REVOKED and leaf.reason == "keyCompromise"
    assert leaf.url == life.crl_server.url("intermediate.crl")
    assert intermediate.position == 1 and intermediate.status is RevocationStatus.GOOD  # the root's CRL (PEM)
    assert revoked_series(result) == {"0": 1.0, "1": 0.0}
    assert crl_success(result) == [1.0]


async def test_not_revoked_and_cached_until_next_update(life: Life) -> None:
    prober = Prober()
    before = life.crl_server.hits["/intermediate.crl"]
    first = await probe(life.broker("not_revoked"), prober)
    assert revoked_series(first) == {"0": 0.0, "1": 0.0}
    await probe(life.broker("not_revoked"), prober)
    await probe(life.broker("revoked"), prober)  # same CRL URL: one fetch for every broker
    assert life.crl_server.hits["/intermediate.crl"] - before == 1


@pytest.mark.parametrize(
    ("scenario", "detail"),
    [
        ("crl_missing", "answered HTTP 404"),
        ("crl_stale", "is stale"),
        ("crl_forged", "is not signed by"),
    ],
)
async def test_no_usable_crl_means_no_revoked_series(life: Life, scenario: str, detail: str) -> None:
    result = await probe(life.broker(scenario))
    assert result.success
    assert result.revocation is not None and result.revocation.fetch_success is False
    leaf = result.revocation.checks[0]
    assert leaf.status is RevocationStatus.UNKNOWN and detail in leaf.detail, leaf.detail
    assert revoked_series(result) == {"1": 0.0}  # the intermediate still has its answer
    assert crl_success(result) == [0.0]


async def test_no_crl_distribution_point_no_revocation_series(lab: Lab) -> None:
    result = await probe(lab.broker("good"))
    assert result.revocation is not None and result.revocation.checks == ()
    assert revoked_series(result) == {} and crl_success(result) == []


# --------------------------------------------------------------------------------------------------
# Lints, on real brokers


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        ("good", []),
        ("no_san", [Lint.NO_SUBJECT_ALT_NAME]),
        ("long", [Lint.LEAF_VALIDITY_OVER_398_DAYS]),
        ("late", [Lint.RENEWAL_OVERDUE]),
        ("root_included", [Lint.ROOT_INCLUDED]),
        ("out_of_order", [Lint.CHAIN_OUT_OF_ORDER, Lint.ROOT_INCLUDED]),
        ("legacy", [Lint.LEGACY_TLS_ACCEPTED]),
    ],
)
async def test_lints_on_real_brokers(life: Life, scenario: str, expected: list[Lint]) -> None:
    result = await probe(life.broker(scenario), Prober(legacy_tls_interval=3600.0))
    assert [finding.lint for finding in result.lints] == expected, result.lints
    if scenario in ("good", "long", "late", "root_included", "out_of_order", "legacy"):
        assert result.success, (scenario, result.failure)  # a lint never fails the probe
    families = {f.name: f for f in broker_families([(result,)], {}, {}, time.time())}
    assert sorted(s.labels["lint"] for s in families["mqtt_broker_cert_lint"].samples) == sorted(expected)


@pytest.mark.parametrize(
    ("scenario", "lint"),
    [("weak_key", Lint.RSA_KEY_UNDER_2048), ("weak_signature", Lint.SHA1_OR_MD5_SIGNATURE)],
)
async def test_weak_crypto_lints_on_the_shared_lab(lab: Lab, scenario: str, lint: Lint) -> None:
    result = await probe(lab.broker(scenario))
    assert lint in [finding.lint for finding in result.lints]


async def test_legacy_tls_check_runs_at_its_own_cadence(life: Life) -> None:
    assert (await probe(life.broker("legacy"))).legacy_tls is None  # opt-in: off by default
    hourly = Prober(legacy_tls_interval=3600.0)
    first = await probe(life.broker("legacy"), hourly)
    assert first.legacy_tls is not None and first.legacy_tls.accepted is True
    assert first.legacy_tls.version == "TLSv1.1"
    again = await probe(life.broker("legacy"), hourly)
    assert again.legacy_tls == first.legacy_tls  # cached: not re-checked within the hour

    modern = await probe(life.broker("good"), hourly)
    assert modern.legacy_tls is not None and modern.legacy_tls.accepted is False
    assert "refused" in modern.legacy_tls.detail

    always = Prober(legacy_tls_interval=0.0)
    one = await probe(life.broker("legacy"), always)
    await asyncio.sleep(0.01)
    two = await probe(life.broker("legacy"), always)
    assert one.legacy_tls is not None and two.legacy_tls is not None
    assert two.legacy_tls.checked_at > one.legacy_tls.checked_at


# --------------------------------------------------------------------------------------------------
# Rendering and the exposition


def test_rendering_is_part_of_broker_families_and_passes_promtool(lab: Lab, life: Life) -> None:
    async def results() -> list[ProbeResult]:
        return [
            await probe(life.broker("revoked", served_cert_file=str(life.leaves["b"].cert_path))),
            await probe(life.broker("legacy"), Prober(legacy_tls_interval=3600.0)),
            await probe(lab.broker("mtls_with_cert")),
        ]

    found = asyncio.run(results())

    class Fixed(Collector):
        def collect(self) -> Iterator[Any]:
            yield from broker_families([(result,) for result in found], {}, {}, time.time())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    text = generate_latest(registry).decode()
    for name in (
        'mqtt_broker_served_cert_matches_file{broker="revoked"} 0.0',
        'mqtt_broker_served_cert_file_read_success{broker="revoked"} 1.0',
        'mqtt_broker_cert_revoked{broker="revoked",position="0"} 1.0',
        'mqtt_broker_crl_fetch_success{broker="revoked"} 1.0',
        'mqtt_broker_cert_lint{broker="legacy",lint="legacy_tls_accepted"} 1.0',
        'mqtt_broker_cert_anchor_not_after_timestamp_seconds{broker="legacy"}',
        'mqtt_cert_exporter_client_cert_not_after_timestamp_seconds{broker="mtls_with_cert"}',
    ):
        assert name in text, name
    promtool_check(text)


@pytest.mark.slow
def test_exporter_process_reports_an_outdated_certificate(life: Life, tmp_path: Path) -> None:
    """The daemon as operators run it: /metrics says the broker serves something else than its file."""
    renewed = tmp_path / "renewed.pem"
    renewed.write_bytes(life.leaves["b"].cert_path.read_bytes())
    good = life.brokers["good"]
    config = tmp_path / "config.yaml"
    config.write_text(
        f"""
defaults: {{interval: 1s, timeout: 1s}}
brokers:
  - name: stale
    address: '{good.address}'
    tls: {{ca_file: '{life.root.cert_path}', server_name: localhost, served_cert_file: '{renewed}'}}
"""
    )
    process = start_exporter(config, tmp_path)
    try:

        def metrics() -> str | None:
            text = process.get("/metrics")
            return text if "mqtt_broker_served_cert_matches_file{" in text else None

        text = wait_for(metrics)
        values = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert values[("mqtt_broker_probe_success", (("broker", "stale"),))] == 1.0
        assert values[("mqtt_broker_served_cert_matches_file", (("broker", "stale"),))] == 0.0
        key = ("mqtt_broker_served_cert_file_not_before_timestamp_seconds", (("broker", "stale"),))
        assert values[key] == life.leaves["b"].cert.not_valid_before_utc.timestamp()
        wait_for(lambda: "serves an outdated certificate" in process.log())
        assert "renewed_on=" in process.log()
    finally:
        process.stop()
