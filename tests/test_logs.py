"""Log lines: fields that cannot collide with LogRecord (issue 18.4), escaped certificate text (18.11),
go-kit level names (issue 14), and every HTTP path of a real exporter at --log.level=debug."""

from __future__ import annotations

import ast
import importlib
import io
import json
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from mqtt_cert_exporter import logs
from tests.conftest import ROOT, ExporterProcess, Lab, start_exporter

RESERVED = sorted(set(vars(logging.makeLogRecord({}))) | {"message", "asctime"})
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


@pytest.fixture
def captured() -> Iterator[tuple[io.StringIO, logs.FieldLogger]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.LogfmtFormatter())
    logger = logging.getLogger("tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield stream, logs.get_logger("tests.logs")
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("key", RESERVED)
def test_any_field_name_can_be_logged(captured: tuple[io.StringIO, logs.FieldLogger], key: str) -> None:
    stream, log = captured
    log.debug("probed", extra={key: "lab", "target": "127.0.0.1:8883"})
    line = stream.getvalue()
    assert "msg=probed" in line
    assert f" {key}=lab" in line or f" {key}_=lab" in line
    assert "target=127.0.0.1:8883" in line


def test_a_field_named_like_a_leading_field_does_not_replace_it(
    captured: tuple[io.StringIO, logs.FieldLogger],
) -> None:
    stream, log = captured
    log.info("started", extra={"level": "x", "msg": "y"})
    assert stream.getvalue().startswith("ts=")
    assert " level=info logger=tests.logs msg=started level_=x msg_=y" in stream.getvalue()


def test_every_log_call_with_fields_goes_through_a_field_logger() -> None:
    """The guard holds only if the exporter's loggers are FieldLoggers: a plain Logger raises again."""
    offenders = []
    for path in sorted((ROOT / "exporter").rglob("*.py")):
        parts = ("mqtt_cert_exporter", *path.relative_to(ROOT / "exporter").with_suffix("").parts)
        module_name = ".".join(parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in LEVELS
                and any(keyword.arg == "extra" for keyword in node.keywords)
            ):
                continue
            target = node.func.value
            module = importlib.import_module(module_name)
            if not (
                isinstance(target, ast.Name)
                and isinstance(getattr(module, target.id, None), logs.FieldLogger)
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


def record(message: str, **fields: object) -> logging.LogRecord:
    made = logging.makeLogRecord({"name": "exporter", "levelname": "WARNING", "msg": message})
    made.__dict__.update(fields)
    return made


HOSTILE = "CN=evil\r\nlevel=error msg=forged\x1b[2J\x00\u202egnp.exe\x85"


def test_logfmt_escapes_control_and_bidi_characters_from_certificates() -> None:
    line = logs.LogfmtFormatter().format(record("broker probe fails", why=HOSTILE))
    assert line.isprintable()
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u202e" not in line
    assert r'why="CN=evil\r\nlevel=error msg=forged\x1b[2J\x00\u202egnp.exe\x85"' in line
    assert " level=warn " in line


def test_json_escapes_control_characters_and_round_trips() -> None:
    line = logs.JsonFormatter().format(record("broker probe fails", why=HOSTILE, brokers=3))
    assert line.isascii() and line.isprintable()
    parsed = json.loads(line)
    assert parsed["why"] == HOSTILE
    assert parsed["brokers"] == 3
    assert parsed["level"] == "warn"


def test_a_huge_value_is_cut() -> None:
    line = logs.LogfmtFormatter().format(record("x", subject="A" * 60_000))
    assert len(line) < logs.MAX_VALUE_CHARS + 200
    assert f"...({60_000 - logs.MAX_VALUE_CHARS} more characters)" in line


def test_warn_is_both_the_flag_value_and_the_printed_level() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("warn")
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    try:
        logs.get_logger("mqtt_cert_exporter.test").warning("careful")
        logs.get_logger("mqtt_cert_exporter.test").info("not shown")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    assert "level=warn logger=mqtt_cert_exporter.test msg=careful" in stream.getvalue()
    assert "not shown" not in stream.getvalue()


# --------------------------------------------------------------------------------------------------
# A real exporter at debug level: every HTTP path answers, none with 500, and no logging error.


@pytest.fixture(scope="module")
def debug_exporter(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    workdir = tmp_path_factory.mktemp("debug-logs")
    config = workdir / "config.yaml"
    config.write_text(
        lab.config_yaml("good", "expired")
        + f"modules:\n  lab:\n    timeout: 2s\n    tls:\n      ca_file: '{lab.root.cert_path}'\n"
        "      server_name: localhost\n"
    )
    process = start_exporter(
        config, workdir, "--log.level=debug", r"--probe.allowed-target=127\.0\.0\.1:[0-9]+"
    )
    try:
        yield process
    finally:
        process.stop()


def status_of(exporter: ExporterProcess, path: str, method: str = "GET") -> int:
    request = urllib.request.Request(exporter.url + path, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.mark.slow
def test_every_path_at_debug_level(debug_exporter: ExporterProcess, lab: Lab) -> None:
    good, expired = lab.broker("good").address, lab.broker("expired").address
    answers = {
        path: status_of(debug_exporter, path, method)
        for path, method in [
            ("/", "GET"),
            ("/metrics", "GET"),
            ("/-/healthy", "GET"),
            ("/-/ready", "GET"),
            ("/-/reload", "POST"),
            (f"/probe?target={good}&module=lab", "GET"),
            (f"/probe?target={expired}&module=lab", "GET"),
            (f"/probe?target={good}&module=lab&debug=true", "GET"),
            ("/probe?target=192.0.2.1:8883", "GET"),
            ("/probe?target=127.0.0.1%00.x:1", "GET"),
            ("/probe?target=127.0.0.1:1&module=nope", "GET"),
            ("/nowhere", "GET"),
        ]
    }
    assert answers == {
        "/": 200,
        "/metrics": 200,
        "/-/healthy": 200,
        "/-/ready": 200,
        "/-/reload": 200,
        f"/probe?target={good}&module=lab": 200,
        f"/probe?target={expired}&module=lab": 200,
        f"/probe?target={good}&module=lab&debug=true": 200,
        "/probe?target=192.0.2.1:8883": 403,
        "/probe?target=127.0.0.1%00.x:1": 400,
        "/probe?target=127.0.0.1:1&module=nope": 400,
        "/nowhere": 404,
    }
    log = debug_exporter.log()
    assert "level=debug logger=mqtt_cert_exporter.multitarget msg=probed" in log
    probed = [line for line in log.splitlines() if "msg=probed" in line and f"target={good}" in line]
    assert probed and "module=lab" in probed[0] and "success=True" in probed[0]
    assert "Traceback" not in log
    assert "Logging error" not in log
    assert "Attempt to overwrite" not in log
