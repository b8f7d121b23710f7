"""Helpers shared by the tests/test_config_*.py modules: a document parsed as the loader reads it
(dedented, relative to a folder, with an environment of its own), the errors it is refused with, its
only broker, and the test PEM files written out (the ``pems`` fixture of tests/conftest.py)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from mqtt_cert_exporter.config import BrokerConfig, Config, ConfigError, parse_config


def parse(text: str, base_dir: Path, env: Mapping[str, str] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), base_dir=str(base_dir), env=env or {})


def errors(text: str, base_dir: Path, env: Mapping[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, base_dir, env)
    return caught.value.errors


def only_broker(config: Config) -> BrokerConfig:
    (broker,) = config.brokers
    return broker


def write_pems(directory: Path, pems: dict[str, bytes]) -> None:
    for name, content in pems.items():
        (directory / name).write_bytes(content)
