"""Issue 18.11: strings a certificate chooses (subject, issuer, SANs) cannot steer a terminal, split
`check`'s text report or make an unbounded line. Through the real `check`, against a TLS server that
presents hostile certificates made by the lab factory."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from mqtt_cert_exporter.lab.pki import Pki
from tests.conftest import Lab
from tests.lab.hostile import HostileServer, after_tls
from tests.test_check import run_check

#: A terminal acts on these; none may reach the text report raw.
HOSTILE = ("\r", "\x1b", "\x00", "\u202e", "\u2028", "\x85")
LONG_SAN = "a\x1b]0;owned\x07\r\nverdict  OK: forged" + "x" * 20_000 + ".example.com"


@pytest.fixture(scope="module")
def hostile_names(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(address, CA file) of a server whose leaf's and intermediate's names are full of controls."""
    pki = Pki(tmp_path_factory.mktemp("hostile-names"))
    root = pki.root("Root\x1b[2J\u202e")
    # not sent by the server: the report names it as the missing issuer
    intermediate = pki.intermediate("Inter\r\nverdict  OK\x00", root)
    leaf = pki.leaf(
        "leaf",
        intermediate,
        common_name="evil\r\n\x1b[2J\u202e\x00\u2028\x85end",
        dns_names=("localhost", LONG_SAN),
    )
    server = HostileServer(after_tls(lambda _: None), cert=leaf.cert_path, key=leaf.key_path).start()
    try:
        yield server.address, str(root.cert_path)
    finally:
        server.stop()


def assert_inert(text: str) -> None:
    for char in HOSTILE:
        assert char not in text, f"{char!r} reached the report raw"
    for line in text.splitlines():
        assert len(line) < 2_000, f"a line of {len(line)} characters"
    assert not any(line.lstrip().startswith("verdict  OK") for line in text.splitlines())


@pytest.mark.parametrize("server_name", ["localhost", "not-covered.example.com"])
def test_certificate_names_cannot_split_or_steer_the_text_report(
    hostile_names: tuple[str, str], server_name: str
) -> None:
    address, ca_file = hostile_names
    args = [address, "--timeout", "2s", "--ca-file", ca_file, "--server-name", server_name]
    result = run_check(*args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert_inert(result.stdout)
    assert_inert(result.stderr)
    assert "evil\\r\\n\\x1b[2J\\u202e\\x00\\u2028\\x85end" in result.stdout  # shown escaped, not dropped
    coloured = run_check(*args, "--color", "always").stdout
    assert "\x1b[1m" in coloured  # our own styling stays
    assert "\x1b[2J" not in coloured and "\x1b]0;" not in coloured and "\r" not in coloured


def test_json_keeps_the_names_whole(hostile_names: tuple[str, str]) -> None:
    address, ca_file = hostile_names
    result = run_check(
        address, "--timeout", "2s", "--ca-file", ca_file, "--server-name", "localhost", "--output", "json"
    )
    document = json.loads(result.stdout)
    leaf = document["tls"]["chain"][0]
    assert "evil\r\n\x1b[2J\u202e" in leaf["subject"] and LONG_SAN in leaf["dns_names"]  # whole
    assert not any(char in result.stdout for char in HOSTILE)
