"""Static sharding (``--shard=i/n``): every broker is probed by exactly one of n exporters."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mqtt_cert_exporter.cli import serve_parser
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.shard import in_shard, parse_shard, select, shard_of
from tests.conftest import ROOT, ExporterProcess, Lab, start_exporter, wait_for

NAMES = [f"plant-{i}.edge.example.com" for i in range(10_000)]


@pytest.mark.parametrize("count", [1, 2, 3, 7, 16])
def test_every_name_is_in_exactly_one_shard_and_shards_are_even(count: int) -> None:
    sizes: Counter[int] = Counter()
    for name in NAMES:
        owners = [index for index in range(count) if in_shard(name, (index, count))]
        assert len(owners) == 1, name
        assert owners[0] == shard_of(name, count)
        sizes[owners[0]] += 1
    expected = len(NAMES) / count
    # a binomial spread: 5 standard deviations is far beyond chance for a uniform hash
    spread = 5 * (expected * (1 - 1 / count)) ** 0.5 + 1
    assert sorted(sizes) == list(range(count))
    assert all(abs(size - expected) <= spread for size in sizes.values()), sizes


def test_shard_is_a_stable_sha256_of_the_name_not_pythons_hash() -> None:
    # Pinned values: the same in every process, on every host and Python version.
    digest = hashlib.sha256(b"plant-a").digest()
    assert shard_of("plant-a", 1000) == int.from_bytes(digest[-8:], "big") % 1000
    pinned = {name: shard_of(name, 4) for name in ("plant-a", "plant-b", "plant-c", "bröker-ü")}
    script = (
        "from mqtt_cert_exporter.shard import shard_of; "
        "print([shard_of(n, 4) for n in ('plant-a', 'plant-b', 'plant-c', 'bröker-ü')])"
    )
    for seed in ("0", "1", "random"):
        out = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout
        assert out.strip() == str(list(pinned.values()))


def test_adding_brokers_never_moves_existing_ones() -> None:
    before = {name: shard_of(name, 3) for name in NAMES[:500]}
    after = {name: shard_of(name, 3) for name in [*NAMES[:500], *NAMES[5000:5100]]}
    assert all(after[name] == shard for name, shard in before.items())


def test_select_keeps_config_order_and_none_means_all() -> None:
    brokers = [BrokerConfig(name, Target("127.0.0.1", 8883)) for name in NAMES[:50]]
    assert select(brokers, None) == tuple(brokers)
    halves = [select(brokers, (index, 2)) for index in range(2)]
    assert sorted(b.name for half in halves for b in half) == sorted(b.name for b in brokers)
    for half in halves:
        positions = [brokers.index(b) for b in half]
        assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("text", "expected"), [("0/1", (0, 1)), ("0/2", (0, 2)), ("1/2", (1, 2)), ("9/10", (9, 10))]
)
def test_parse_shard(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected
    assert serve_parser().parse_args([f"--shard={text}"]).shard == expected


@pytest.mark.parametrize("text", ["2/2", "3/2", "0/0", "-1/2", "1", "1/", "/2", "a/b", "1/2/3", ""])
def test_parse_shard_rejects(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)
    with pytest.raises(SystemExit):
        serve_parser().parse_args([f"--shard={text}"])
    assert "--shard" in capsys.readouterr().err


def test_no_shard_flag_means_every_broker() -> None:
    assert serve_parser().parse_args([]).shard is None


# --------------------------------------------------------------------------------------------------
# End to end: two real exporter processes over one configuration.

SCENARIOS = (
    "good",
    "expiring",
    "expired",
    "not_yet_valid",
    "wrong_host",
    "expired_wrong_host",
    "self_signed",
    "unknown_ca",
    "password_ok",
    "tls12",
    "closed",
    "plaintext",
)


def _probed(process: ExporterProcess) -> tuple[set[str], float]:
    """(brokers with a probe result, mqtt_cert_exporter_brokers)."""
    brokers: set[str] = set()
    configured = -1.0
    for family in text_string_to_metric_families(process.get("/metrics")):
        for sample in family.samples:
            if sample.name == "mqtt_broker_probe_success":
                brokers.add(sample.labels["broker"])
            elif sample.name == "mqtt_cert_exporter_brokers":
                configured = sample.value
    return brokers, configured


@pytest.mark.slow
def test_two_shards_cover_every_broker_exactly_once(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml(*SCENARIOS))
    expected = [{name for name in SCENARIOS if in_shard(name, (index, 2))} for index in range(2)]
    assert all(expected), "the scenario names should land in both shards"
    processes = [start_exporter(config, tmp_path, f"--shard={index}/2") for index in range(2)]
    try:
        results = []
        for process in processes:

            def complete(process: ExporterProcess = process) -> tuple[set[str], float] | None:
                probed, configured = _probed(process)
                return (probed, configured) if configured >= 0 and len(probed) >= configured else None

            results.append(wait_for(complete, timeout=30))
        (first, first_count), (second, second_count) = results
        assert first | second == set(SCENARIOS)
        assert not first & second
        assert [first, second] == expected
        # mqtt_cert_exporter_brokers counts the brokers this shard probes, not the whole config
        assert (first_count, second_count) == (len(first), len(second))
        assert "shard=0/2" in processes[0].log()
    finally:
        for process in processes:
            process.stop()
