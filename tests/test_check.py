"""`mqtt-cert-exporter check` as users run it: a subprocess against the lab's real brokers."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import http.server
import io
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mqtt_cert_exporter import check
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.report import FULL_CHAIN_FIX, RELOAD_FIX, RENEW_FIX, REVOKED_FIX
from mqtt_cert_exporter.results import Lint, Phase, Problem, Reason, Stage
from tests.conftest import PASSWORD, ROOT, Lab

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def run_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mqtt_cert_exporter", "check", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "MQTT_TEST_PASSWORD": PASSWORD, **(env or {})},
        timeout=30,
        check=False,
    )


def address_args(lab: Lab, scenario: str) -> list[str]:
    """The flags that reach a lab scenario the way its BrokerConfig does."""
    broker = lab.broker(scenario)
    args = [broker.address, "--timeout", "2s"]
    if broker.tls.ca_file:
        args += ["--ca-file", broker.tls.ca_file]
    if broker.tls.server_name:
        args += ["--server-name", broker.tls.server_name]
    return args


def write_config(lab: Lab, directory: Path, *scenarios: str) -> Path:
    path = directory / "config.yaml"
    path.write_text(lab.config_yaml(*scenarios))
    return path


def sections(text: str) -> dict[str, str]:
    """A multi-broker text report, split into each broker's report (keyed by broker name)."""
    return {block.split()[0]: block for block in text.split("\n\n") if block.strip()}


# --------------------------------------------------------------------------------------------------
# Text report


def test_text_report_names_each_problem_and_fix(lab: Lab, tmp_path: Path) -> None:
    expectations = {
        "expired": ["- expired: certificate 0 (expired) expired on", RENEW_FIX],
        "incomplete_chain": ["- incomplete_chain:", FULL_CHAIN_FIX],
        "unknown_ca": ["- unknown_ca: issued by", "Other Root CA", "cafile"],
        "wrong_host": ["- hostname_mismatch:", "other.example.com"],
        "mtls": ["- tls/client_certificate_required:", "require_certificate true", "tls.cert_file"],
        "password": ["- mqtt/refused:", "CONNACK code 135 (not authorized)", "allow_anonymous false"],
        "closed": ["- connect/refused:", "is the broker running"],
        "plaintext": ["- tls/protocol_error:", "8883"],
        "good": ["OK: trusted chain"],
        "password_ok": ["CONNACK 0 (success)"],
    }
    config = write_config(lab, tmp_path, *expectations)
    completed = run_check("--config.file", str(config))
    assert completed.returncode == 2, completed.stderr
    assert completed.stderr == ""
    assert not ANSI.search(completed.stdout)  # stdout is a pipe: no colour
    reports = sections(completed.stdout)
    for scenario, fragments in expectations.items():
        for fragment in fragments:
            assert fragment in reports[scenario], (scenario, fragment)
    assert "10 brokers: 2 OK, 8 CRITICAL" in completed.stdout
    assert PASSWORD not in completed.stdout + completed.stderr


def test_colour_when_asked(lab: Lab) -> None:
    completed = run_check(*address_args(lab, "expired"), "--color", "always")
    assert completed.returncode == 2
    assert ANSI.search(completed.stdout)


def test_use_colour_rules() -> None:
    assert check.use_colour("auto", isatty=True, environ={})
    assert not check.use_colour("auto", isatty=True, environ={"NO_COLOR": "1"})
    assert not check.use_colour("auto", isatty=False, environ={})
    assert check.use_colour("always", isatty=False, environ={"NO_COLOR": "1"})
    assert not check.use_colour("never", isatty=True, environ={})


# --------------------------------------------------------------------------------------------------
# JSON output


@pytest.mark.parametrize("scenario", ["expired", "password_wrong"])
def test_json_matches_a_direct_probe(lab: Lab, scenario: str) -> None:
    broker = lab.broker(scenario)
    args = address_args(lab, scenario)
    password_file = None
    if broker.mqtt.username:
        assert broker.mqtt.password is not None
        password_file = Path(lab.pki.directory) / f"{scenario}.password"
        password_file.write_text(broker.mqtt.password.reveal() + "\n")
        args += ["--username", broker.mqtt.username, "--password-file", str(password_file)]
    completed = run_check(*args, "--output", "json")
    assert completed.returncode == 2, completed.stderr
    document = json.loads(completed.stdout)
    assert isinstance(document, dict)

    direct = asyncio.run(Prober().probe(broker))
    assert direct.tls is not None and direct.mqtt is not None and direct.failure is not None
    assert document["failure"]["stage"] == direct.failure.stage.value
    assert document["failure"]["reason"] == direct.failure.reason.value
    assert [c["fingerprint_sha256"] for c in document["tls"]["chain"]] == [
        c.fingerprint_sha256 for c in direct.tls.chain
    ]
    assert [p["problem"] for p in document["tls"]["problems"]] == [
        p.value for p in direct.tls.verdict.problems
    ]
    assert document["tls"]["trusted"] is direct.tls.verdict.trusted
    assert document["mqtt"]["connack_code"] == direct.mqtt.connack_code
    assert document["status"] == "critical" and document["exit_code"] == 2
    assert document["ip"] == direct.ip


def test_json_for_a_config_is_an_array_in_config_order(lab: Lab, tmp_path: Path) -> None:
    config = write_config(lab, tmp_path, "good", "expiring", "expired", "closed")
    completed = run_check("--config.file", str(config), "--output", "json")
    assert completed.returncode == 2, completed.stderr
    documents = json.loads(completed.stdout)
    assert [(d["broker"], d["status"], d["exit_code"]) for d in documents] == [
        ("good", "ok", 0),
        ("expiring", "warning", 1),
        ("expired", "critical", 2),
        ("closed", "critical", 2),
    ]
    completed = run_check("--config.file", str(config), "--broker", "expiring", "--output", "json")
    assert completed.returncode == 1
    [document] = json.loads(completed.stdout)
    assert document["broker"] == "expiring" and document["warnings"][0]["warning"] == "expires_soon"


# --------------------------------------------------------------------------------------------------
# Exit codes


@pytest.mark.parametrize(
    ("scenario", "extra", "code"),
    [
        ("good", [], 0),
        ("expiring", ["--warn-days", "30"], 1),
        ("expired", [], 2),
        ("closed", [], 2),
    ],
)
def test_exit_codes(lab: Lab, scenario: str, extra: list[str], code: int) -> None:
    completed = run_check(*address_args(lab, scenario), *extra)
    assert completed.returncode == code, completed.stdout + completed.stderr
    assert completed.stderr == ""


@pytest.mark.parametrize(
    ("scenario", "extra", "code"),
    [
        ("expiring", ["--warn-days", "5"], 0),
        ("expiring", [], 1),  # --warn-days defaults to 30
        ("password", [], 2),  # CONNACK refused
        ("self_signed", [], 2),
    ],
)
def test_more_exit_codes_in_process(lab: Lab, scenario: str, extra: list[str], code: int) -> None:
    out = io.StringIO()
    assert check.main([*address_args(lab, scenario), *extra], stdout=out, stderr=io.StringIO()) == code


def test_exit_code_is_the_worst_broker(lab: Lab, tmp_path: Path) -> None:
    config = str(write_config(lab, tmp_path, "good", "expiring"))
    assert check.main(["--config.file", config], stdout=io.StringIO(), stderr=io.StringIO()) == 1
    only_good = ["--config.file", config, "--broker", "good"]
    assert check.main(only_good, stdout=io.StringIO(), stderr=io.StringIO()) == 0


def test_bad_arguments_exit_3_not_2(tmp_path: Path) -> None:
    completed = run_check("--no-such-flag", "localhost:8883")
    assert completed.returncode == 3
    assert "unrecognized arguments: --no-such-flag" in completed.stderr
    assert completed.stdout == ""
    completed = run_check("--config.file", str(tmp_path / "missing.yaml"))
    assert completed.returncode == 3
    assert "missing.yaml" in completed.stderr and completed.stdout == ""


def test_unknown_broker_exits_3(lab: Lab, tmp_path: Path) -> None:
    config = write_config(lab, tmp_path, "good", "expired")
    completed = run_check("--config.file", str(config), "--broker", "nope")
    assert completed.returncode == 3
    assert "no broker named 'nope' (configured: good, expired)" in completed.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "give an address"),
        (["localhost:99999"], "port must be 1-65535"),
        (["mqtt://localhost:1883"], "not TLS"),
        (["localhost:8883", "--timeout", "10"], "missing unit"),
        (["localhost:8883", "--output", "xml"], "invalid choice"),
        (["localhost:8883", "--protocol", "4"], "invalid choice"),
        (["localhost:8883", "--warn-days", "soon"], "number of days"),
        (
            ["localhost:8883", "--ca-file", "/nonexistent/ca.pem"],
            "--ca-file /nonexistent/ca.pem: no such file",
        ),
        (["localhost:8883", "--ca-file", __file__], "no usable CA certificate"),
        (["localhost:8883", "--key-file", __file__], "--key-file requires --cert-file"),
        (["localhost:8883", "--password-file", __file__], "--password-file requires --username"),
        (["localhost:8883", "--broker", "x"], "--broker needs --config.file"),
        (["localhost:8883", "--config.file", "c.yaml"], "either an address or --config.file"),
        (["--config.file", "c.yaml", "--ca-file", "x.pem"], "--ca-file: only with an address"),
    ],
)
def test_usage_errors_exit_3(argv: list[str], message: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert check.main(argv, stdout=out, stderr=err) == 3
    assert message in err.getvalue()
    assert out.getvalue() == ""


def test_invalid_config_lists_every_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("brokers:\n  - name: a\n    address: 'h:0'\n  - name: b\n    bogus: 1\n")
    err = io.StringIO()
    assert check.main(["--config.file", str(config)], stdout=io.StringIO(), stderr=err) == 3
    assert "port must be 1-65535" in err.getvalue() and "bogus" in err.getvalue()


# --------------------------------------------------------------------------------------------------
# Secrets


def test_password_never_printed(lab: Lab, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    args = [*address_args(lab, "password_ok"), "--username", "monitor", "--password-file", str(password_file)]
    for output in ("text", "json"):
        completed = run_check(*args, "--output", output, "--color", "always")
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert PASSWORD not in completed.stdout + completed.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password-either\n")
    args[-1] = str(wrong)
    out, err = io.StringIO(), io.StringIO()
    assert check.main(args, stdout=out, stderr=err) == 2
    assert "CONNACK code 135" in out.getvalue()
    assert "not-the-password-either" not in out.getvalue() + err.getvalue()


def test_client_certificate_flags(lab: Lab) -> None:
    client = ["--cert-file", str(lab.client.cert_path), "--key-file", str(lab.client.key_path)]
    out = io.StringIO()
    assert check.main([*address_args(lab, "mtls"), *client], stdout=out, stderr=io.StringIO()) == 0
    assert re.search(
        rf"client\s+our client certificate exporter-client \({re.escape(str(lab.client.cert_path))}\) expires ",
        out.getvalue(),
    )
    out = io.StringIO()
    assert check.main(address_args(lab, "mtls"), stdout=out, stderr=io.StringIO()) == 2
    assert "require_certificate true" in out.getvalue()
    assert "our client certificate" not in out.getvalue()


# --------------------------------------------------------------------------------------------------
# Around the chain (issue 7), on real brokers


def _day(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d")


def test_outdated_served_certificate_exits_1_and_says_reload(lab: Lab, tmp_path: Path) -> None:
    """The broker serves the lab's good leaf; its configured certificate file holds a renewed one."""
    renewed = lab.pki.leaf("check-renewed-good", lab.intermediate, not_before=dt.datetime.now(dt.UTC))
    served_file = tmp_path / "broker.crt"
    served_file.write_bytes(renewed.cert_path.read_bytes())
    config = tmp_path / "config.yaml"
    config.write_text(
        lab.config_yaml("good").replace("    tls:\n", f"    tls:\n      served_cert_file: '{served_file}'\n")
    )

    completed = run_check("--config.file", str(config))
    assert completed.returncode == 1, completed.stdout + completed.stderr
    new = renewed.cert
    sentence = (
        f"the broker serves an outdated certificate: the file {served_file} was renewed on "
        f"{_day(new.not_valid_before_utc.timestamp())} (expires {_day(new.not_valid_after_utc.timestamp())}) "
        "but the broker still serves the old one (expires "
    )
    assert sentence in completed.stdout
    assert f"fix: {RELOAD_FIX}" in completed.stdout
    assert "WARNING: the broker serves an outdated certificate" in completed.stdout

    out = io.StringIO()
    assert (
        check.main(["--config.file", str(config), "--output", "json"], stdout=out, stderr=io.StringIO()) == 1
    )
    [document] = json.loads(out.getvalue())
    assert document["success"] is True and document["status"] == "warning"
    assert document["served_file"]["matches"] is False
    served = document["served_file"]
    assert served["served_fingerprint_sha256"] == document["tls"]["chain"][0]["fingerprint_sha256"]
    assert served["certificate"]["fingerprint_sha256"] != served["served_fingerprint_sha256"]
    assert served["certificate"]["not_before"] == new.not_valid_before_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert [w["warning"] for w in document["warnings"]] == ["served_cert_mismatch"]

    # A file that cannot be used is only a note: nothing to compare, nothing to warn about.
    served_file.write_text("")
    out = io.StringIO()
    assert check.main(["--config.file", str(config)], stdout=out, stderr=io.StringIO()) == 0
    assert f"note: {served_file}: no PEM or DER certificate in it" in out.getvalue()


@pytest.fixture(scope="module")
def revoked_config(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A broker of its own serving a leaf that its CA revoked (CRL over HTTP on loopback)."""
    directory = tmp_path_factory.mktemp("revoked")
    crl_dir = directory / "crl"
    crl_dir.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(crl_dir))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/intermediate.crl"
    leaf = lab.pki.leaf("check-revoked", lab.intermediate, crl_distribution_points=[url])
    crl = lab.pki.crl("check-intermediate", lab.intermediate, revoked=[leaf])
    (crl_dir / "intermediate.crl").write_bytes(crl.read_bytes())
    mosquitto = Mosquitto(
        [Listener("revoked", cert=leaf.chain_path(lab.intermediate), key=leaf.key_path)],
        directory / "mosquitto",
    )
    mosquitto.start()
    config = directory / "config.yaml"
    config.write_text(
        f"""
defaults: {{timeout: 2s}}
brokers:
  - name: revoked
    address: '{mosquitto.address("revoked")}'
    tls: {{ca_file: '{lab.root.cert_path}', server_name: localhost}}
"""
    )
    try:
        yield config
    finally:
        mosquitto.stop()
        server.shutdown()
        server.server_close()


def test_revoked_certificate_exits_2_though_the_probe_succeeds(revoked_config: Path) -> None:
    out = io.StringIO()
    assert check.main(["--config.file", str(revoked_config)], stdout=out, stderr=io.StringIO()) == 2
    text = out.getvalue()
    assert "CRITICAL: certificate 0 (check-revoked) was revoked by its CA" in text
    assert "- revoked: certificate 0 (check-revoked) was revoked on " in text
    assert "(keyCompromise) according to the CRL at http://127.0.0.1:" in text
    assert f"fix: {REVOKED_FIX}" in text
    assert "CONNACK 0 (success)" in text

    out = io.StringIO()
    assert (
        check.main(
            ["--config.file", str(revoked_config), "--output", "json"], stdout=out, stderr=io.StringIO()
        )
        == 2
    )
    [document] = json.loads(out.getvalue())
    assert document["success"] is True and document["failure"] is None and document["status"] == "critical"
    [leaf] = document["revocation"]["checks"]
    assert (leaf["position"], leaf["status"], leaf["reason"]) == (0, "revoked", "keyCompromise")


# --------------------------------------------------------------------------------------------------
# The JSON document's schema (docs/check-schema.json): real output of every lab broker holds to it

SCHEMA_PATH = ROOT / "docs" / "check-schema.json"


def schema_validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, document: Any) -> list[str]:
    return [
        f"{document.get('broker')}: {'.'.join(map(str, error.absolute_path))}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_schema_names_every_value_the_code_can_produce() -> None:
    """The enums of the schema are those of the metrics' labels, so neither can drift from the other."""
    definitions = json.loads(SCHEMA_PATH.read_text())["$defs"]
    for name, values in [
        ("stage", Stage),
        ("reason", Reason),
        ("problem", Problem),
        ("phase", Phase),
        ("lint", Lint),
    ]:
        assert definitions[name]["enum"] == [value.value for value in values], name


# Every part of the schema that real output must have exercised (non-null, non-empty) at least once.
# ``unverified_failure`` is left out: no lab broker fails on the non-verifying connection, and its
# schema is that of ``failure``.
EXERCISED = [
    ("failure",),
    ("tls",),
    ("tls", "anchor"),
    ("tls", "problems"),
    ("tls", "chain"),
    ("mqtt",),
    ("warnings",),
    ("served_file",),
    ("served_file", "certificate"),
    ("client_certificate",),
    ("revocation",),
    ("revocation", "checks"),
    ("legacy_tls",),
    ("lints",),
]


def _present(document: dict[str, Any], path: tuple[str, ...]) -> bool:
    value: Any = document
    for key in path:
        if not isinstance(value, dict) or not value.get(key):
            return False
        value = value[key]
    return True


def test_json_of_real_brokers_follows_the_schema(lab: Lab, tmp_path: Path, revoked_config: Path) -> None:
    served_file = tmp_path / "renewed.crt"
    renewed = lab.pki.leaf("schema-renewed-good", lab.intermediate, not_before=dt.datetime.now(dt.UTC))
    served_file.write_bytes(renewed.cert_path.read_bytes())
    config = tmp_path / "config.yaml"
    text = lab.config_yaml(*lab.brokers)
    served = lab.config_yaml("good").split("brokers:\n")[1].replace("name: good", "name: good_renewed")
    served = served.replace("    tls:\n", f"    tls:\n      served_cert_file: '{served_file}'\n")
    config.write_text(text + served)

    # --legacy-tls: the TLS 1.0/1.1 check is opt-in, and legacy_tls is a key to exercise
    completed = run_check("--config.file", str(config), "--output", "json", "--legacy-tls")
    assert completed.returncode == 2, completed.stderr
    documents = json.loads(completed.stdout)
    assert len(documents) == len(lab.brokers) + 1
    out = io.StringIO()
    check.main(["--config.file", str(revoked_config), "--output", "json"], stdout=out, stderr=io.StringIO())
    documents += json.loads(out.getvalue())

    validator = schema_validator()
    assert [error for document in documents for error in schema_errors(validator, document)] == []
    missing = [path for path in EXERCISED if not any(_present(document, path) for document in documents)]
    assert missing == []

    # The schema is strict enough to notice: an undocumented key, a wrong type, a missing key.
    document = documents[0]
    assert schema_errors(validator, {**document, "new_key": 1})
    assert schema_errors(validator, {**document, "exit_code": "0"})
    assert schema_errors(validator, {key: value for key, value in document.items() if key != "tls"})


def test_the_whole_report_reaches_a_slow_reader(lab: Lab, tmp_path: Path) -> None:
    """A JSON report over 64 KiB piped to a reader that is not reading yet: every byte arrives (a write
    through sys.stdout after a run on uvloop came back short, without an error)."""
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml(*lab.brokers))
    out = tmp_path / "out.json"
    command = f"{shlex.quote(sys.executable)} -m mqtt_cert_exporter check --config.file {shlex.quote(str(config))} --output json"
    subprocess.run(
        ["bash", "-c", f"{command} | (sleep 1; cat) > {shlex.quote(str(out))}"],
        cwd=ROOT,
        env={**os.environ, "MQTT_TEST_PASSWORD": PASSWORD},
        timeout=60,
        check=False,
    )
    text = out.read_text()
    assert len(text) > 65536
    assert len(json.loads(text)) == len(lab.brokers)
