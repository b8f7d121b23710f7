"""Targets and addresses are host names or IP literals before anything matches or connects (issue 18.1).

A NUL cut name resolution short after the allow-list had matched the whole text, and a wss:// path let
a suffix pattern match a target that connects elsewhere: /probe was a port scanner.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from mqtt_cert_exporter.config import Config, ModuleConfig, Target, parse_address
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.web.multitarget import probe_handler
from tests.conftest import ROOT

SUFFIX_PATTERN = r".*\.example\.com:[0-9]+"

Client = TestClient[web.Request, web.Application]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("127.0.0.1\0.example.com:8883", "control characters"),
        ("broker\x1b[31m:8883", "control characters"),
        ("broker\x7f:8883", "control characters"),
        ("wss://broker:443/mq\0tt", "control characters"),
        ("wss://broker:443/m\u00e4", "printable ASCII"),
        ("br\u00f6ker.example.com:8883", "xn-- form"),
        ("broker%2F..:8883", "expected a DNS name or an IP address"),
        ("-broker:8883", "expected a DNS name or an IP address"),
        ("a..b:8883", "expected a DNS name or an IP address"),
        ("x" * 64 + ".example.com:8883", "expected a DNS name or an IP address"),
        ("127.1:8883", "four decimal numbers"),
        ("0x7f000001:8883", "four decimal numbers"),
        ("017.0.0.1:8883", "four decimal numbers"),
        ("[fe80::1%e!h]:8883", "IPv6 zone"),
    ],
)
def test_addresses_are_host_names_or_ip_literals(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        parse_address(text)
    assert "\0" not in str(caught.value)


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("mqtt_internal.example.com:8883", Target("mqtt_internal.example.com", 8883)),
        ("broker.example.com.:8883", Target("broker.example.com.", 8883)),
        ("xn--brker-jua.example.com", Target("xn--brker-jua.example.com", 8883)),
        ("[fe80::1%eth0]:8883", Target("fe80::1%eth0", 8883)),
        ("wss://broker/mqtt?x=1", Target("broker", 443, "wss", "/mqtt?x=1")),
    ],
)
def test_ordinary_addresses_still_parse(text: str, target: Target) -> None:
    assert parse_address(text) == target


def test_config_check_refuses_a_nul_in_an_address_with_its_path(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text('brokers:\n  - name: plant\n    address: "127.0.0.1\\0.example.com:8883"\n')
    run = subprocess.run(
        [sys.executable, "-m", "mqtt_cert_exporter", f"--config.file={config}", "--config.check"],
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert run.returncode == 1
    assert b"brokers[0].address: address must not contain control characters" in run.stderr


class Listener:
    """A TCP server that counts the connections made to it (the probe must make none)."""

    def __init__(self) -> None:
        self.accepted = 0

    def _accept(self, _: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        writer.close()


@pytest.fixture
async def listener() -> AsyncIterator[tuple[Listener, int]]:
    counting = Listener()
    server = await asyncio.start_server(counting._accept, "127.0.0.1", 0)  # noqa: SLF001 - the listener's accept callback, served by a plain asyncio server
    async with server:
        yield counting, server.sockets[0].getsockname()[1]


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    config = Config(brokers=(), modules=(("fast", ModuleConfig(timeout=1.0)),))
    app = web.Application()
    app.router.add_get(
        "/probe", probe_handler(lambda: config, Prober(), [SUFFIX_PATTERN, r"localhost:[0-9]+"])
    )
    async with TestClient(TestServer(app, host="127.0.0.1")) as made:
        yield made


async def test_a_nul_in_a_target_is_refused_before_any_connection(
    client: Client, listener: tuple[Listener, int]
) -> None:
    counting, port = listener
    async with client.get("/probe", params={"target": f"127.0.0.1\0.example.com:{port}"}) as response:
        assert response.status == 400
        assert "control characters" in await response.text()
    assert counting.accepted == 0


async def test_a_wss_path_cannot_make_a_suffix_pattern_match(
    client: Client, listener: tuple[Listener, int]
) -> None:
    counting, port = listener
    target = f"wss://127.0.0.1:{port}/x.example.com:1"
    async with client.get("/probe", params={"target": target, "module": "fast"}) as response:
        assert response.status == 403
        assert f"'127.0.0.1:{port}' is not allowed" in await response.text()
    assert counting.accepted == 0


async def test_the_allow_list_matches_where_a_wss_probe_connects(
    client: Client, listener: tuple[Listener, int]
) -> None:
    counting, port = listener
    target = f"wss://localhost:{port}/mqtt"
    async with client.get("/probe", params={"target": target, "module": "fast"}) as response:
        assert response.status == 200
        assert f'broker="wss://localhost:{port}/mqtt"' in await response.text()
    assert counting.accepted >= 1
