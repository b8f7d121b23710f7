"""The HTTP conventions operators expect (issue 14) and the server's defences (issue 18.7, 18.8),
on a real exporter process over real sockets."""

from __future__ import annotations

import asyncio
import gzip
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from mqtt_cert_exporter.config import Config, ModuleConfig
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.web import openmetrics
from mqtt_cert_exporter.web import server as webserver
from mqtt_cert_exporter.web.app import accepts_gzip
from mqtt_cert_exporter.web.multitarget import probe_handler
from tests.conftest import PASSWORD, ROOT, ExporterProcess, Lab, start_exporter, wait_for

OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


@pytest.fixture(scope="module")
def exporter(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExporterProcess]:
    workdir = tmp_path_factory.mktemp("webserver")
    config = workdir / "config.yaml"
    config.write_text(lab.config_yaml("good", "expired"))
    process = start_exporter(config, workdir, "--web.max-connections=16")
    try:
        wait_for(lambda: probe_success(process.get("/metrics"), "expired") == 0)
        wait_for(lambda: probe_success(process.get("/metrics"), "good") == 1)
        yield process
    finally:
        process.stop()


def probe_success(text: str, broker: str) -> float | None:
    for family in parse_text(text):
        for sample in family.samples:
            if sample.name == "mqtt_broker_probe_success" and sample.labels.get("broker") == broker:
                return sample.value
    return None


# --------------------------------------------------------------------------------------------------
# Content negotiation and compression, like promhttp


def test_metrics_are_gzipped_when_the_client_accepts_it(exporter: ExporterProcess) -> None:
    status, headers, body = fetch(exporter.url + "/metrics", **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    text = gzip.decompress(body).decode()
    assert probe_success(text, "good") == 1
    _, plain_headers, plain = fetch(exporter.url + "/metrics", **{"Accept-Encoding": "identity"})
    assert "Content-Encoding" not in plain_headers
    assert len(body) < len(plain) / 3


async def test_probe_answers_are_gzipped_too() -> None:
    config = Config(modules=(("fast", ModuleConfig(timeout=1.0)),))
    app = web.Application()
    app.router.add_get("/probe", probe_handler(lambda: config, Prober(), [r"127\.0\.0\.1:[0-9]+"]))
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: the probe fails at connect, the answer is still metrics
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        params = {"target": f"127.0.0.1:{port}", "module": "fast"}
        async with client.get("/probe", params=params, headers={"Accept-Encoding": "gzip"}) as response:
            assert response.status == 200
            assert response.headers["Content-Encoding"] == "gzip"
            assert "mqtt_broker_probe_success" in await response.text()  # aiohttp decompresses


@pytest.mark.parametrize(
    ("header", "expected"),
    [("gzip", True), ("deflate, gzip;q=0.5", True), ("gzip;q=0", False), ("br", False), ("", False)],
)
def test_accept_encoding(header: str, expected: bool) -> None:
    assert accepts_gzip(header) is expected


def test_openmetrics_is_negotiated_and_parses_strictly(exporter: ExporterProcess) -> None:
    status, headers, body = fetch(exporter.url + "/metrics", Accept=OPENMETRICS_ACCEPT)
    assert status == 200
    assert headers["Content-Type"] == openmetrics.CONTENT_TYPE
    text = body.decode()
    assert text.endswith("\n# EOF\n")
    families = {family.name: family for family in parse_openmetrics(text)}  # type: ignore[no-untyped-call]  # raises on any violation
    assert families["mqtt_broker_probe_success"].type == "gauge"
    failures = families["mqtt_broker_probe_failures"]
    assert failures.type == "counter"
    assert {sample.name for sample in failures.samples} == {"mqtt_broker_probe_failures_total"}
    assert families["process_cpu_seconds"].type == "counter"


def test_text_format_stays_the_default(exporter: ExporterProcess) -> None:
    _, headers, body = fetch(exporter.url + "/metrics")
    assert headers["Content-Type"].startswith("text/plain; version=")
    assert "# EOF" not in body.decode()
    assert {family.name for family in parse_text(body.decode())} >= {"mqtt_broker_probe_success"}


def test_openmetrics_conversion_of_created_and_untyped() -> None:
    text = (
        "# HELP a_total A.\n# TYPE a_total counter\na_total 1.0\n"
        "# HELP a_created A.\n# TYPE a_created gauge\na_created 1.7e+09\n"
        "# HELP u U.\n# TYPE u untyped\nu 2.0\n"
    )
    converted = openmetrics.from_text_format(text)
    assert converted == (
        "# HELP a A.\n# TYPE a counter\na_total 1.0\na_created 1.7e+09\n# HELP u U.\n# TYPE u unknown\nu 2.0\n# EOF\n"
    )
    assert [family.type for family in parse_openmetrics(converted)] == [  # type: ignore[no-untyped-call]
        "counter",
        "unknown",
    ]


# --------------------------------------------------------------------------------------------------
# Bad requests: one short line, never the request's bytes


def raw_request(url: str, data: bytes) -> bytes:
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_a_bad_request_logs_one_short_line_without_credentials(exporter: ExporterProcess) -> None:
    secret = "dXNlcjpodW50ZXIy"  # user:hunter2
    before = exporter.log()
    answer = raw_request(
        exporter.url, f"GET /metrics HTTP/1.1\nHost: x\nAuthorization: Basic {secret}\n\n".encode()
    )
    assert answer.startswith(b"HTTP/1.0 400")
    raw_request(exporter.url, b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n")
    new = wait_for(
        lambda: (
            exporter.log()[len(before) :].count("bad HTTP request refused") == 2
            and exporter.log()[len(before) :]
        )
    )
    lines = new.splitlines()
    assert len(lines) == 2, new
    assert all(len(line) < 300 for line in lines), new
    assert "level=warn logger=aiohttp.server" in lines[0]
    assert "Traceback" not in new and secret not in new and "hunter2" not in new
    assert "error=" in lines[0] and "status=400" in lines[0]


# --------------------------------------------------------------------------------------------------
# Slow and idle floods: the cap evicts the longest-idle connection; Prometheus still gets its scrape


#: Runs the exporter with a low open-file limit, as a small container or systemd's default might.
LOW_FD_LIMIT_WRAPPER = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))
os.execv(sys.executable, [sys.executable, "-m", "mqtt_cert_exporter", *sys.argv[1:]])
"""


def start_wrapped(
    wrapper: str, log: Path, *args: str, pass_fds: tuple[int, ...] = ()
) -> subprocess.Popen[bytes]:
    with open(log, "wb") as output:
        return subprocess.Popen(
            [sys.executable, "-c", wrapper, *args],
            pass_fds=pass_fds,
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "MQTT_TEST_PASSWORD": PASSWORD},
        )


def test_idle_and_slow_floods_cannot_lock_out_a_scrape(lab: Lab, tmp_path: Path) -> None:
    """150 held connections at an fd limit of 128: the default cap (a quarter of the limit) keeps
    descriptors for the probes and evicts the longest-idle connection for each newcomer."""
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    log = tmp_path / "exporter.log"
    process = start_wrapped(
        LOW_FD_LIMIT_WRAPPER, log, f"--config.file={config}", "--web.listen-address=127.0.0.1:0"
    )
    held = []
    try:
        url = wait_for(lambda: re.search(r"url=(http://\S+)/metrics", log.read_text()))[1]
        host, port = url.split("//")[1].split(":")
        for number in range(150):
            sock = socket.create_connection((host, int(port)), timeout=10)
            if number % 2:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # a head that never ends
            held.append(sock)
        for _ in range(5):
            status, _, body = fetch(url + "/metrics")
            assert status == 200
        assert probe_success(body.decode(), "good") == 1  # the probes still get descriptors
        held[0].settimeout(10)
        assert held[0].recv(1) == b""  # the oldest idle connection was closed to make room
    finally:
        for sock in held:
            sock.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


async def test_a_request_head_must_arrive_within_the_header_timeout() -> None:
    app = web.Application()
    guard = webserver.ConnectionGuard(max_connections=8, header_timeout=0.2)
    app.middlewares.append(guard.middleware)

    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello\n")

    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=webserver.IDLE_TIMEOUT)
    await runner.setup()
    assert runner.server is not None
    listeners = await webserver.listen(guard.protocol_factory(runner.server), addresses=["127.0.0.1:0"])
    try:
        port = int(listeners.urls[0].rsplit(":", 1)[1].split("/")[0])
        slow_reader, slow_writer = await asyncio.open_connection("127.0.0.1", port)
        slow_writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200")
        assert await asyncio.wait_for(slow_reader.read(), 30) == b""  # closed by the exporter
        assert guard.timed_out == 1
        # the served connection, kept alive, is idle now: the header timeout does not apply to it
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"hello\n")).startswith(b"HTTP/1.1 200")
        writer.close()
        slow_writer.close()
    finally:
        await listeners.close()
        await runner.cleanup()


# --------------------------------------------------------------------------------------------------
# Flags: --web.telemetry-path, repeatable --web.listen-address, --web.systemd-socket


def test_telemetry_path_and_two_listen_addresses(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(
        config, tmp_path, "--web.listen-address=[::1]:0", "--web.telemetry-path=/internal/metrics"
    )
    try:
        urls = wait_for(
            lambda: (
                re.findall(r"url=(\S+)", process.log()) if process.log().count("msg=listening") == 2 else None
            )
        )
        assert len(urls) == 2
        assert urls[0].startswith("http://127.0.0.1:") and urls[1].startswith("http://[::1]:")
        for url in urls:
            assert url.endswith("/internal/metrics")
            assert fetch(url)[0] == 200
            assert fetch(url.replace("/internal/metrics", "/metrics"))[0] == 404
    finally:
        process.stop()


@pytest.mark.parametrize("path", ["metrics", "/probe", "/", "/a?b"])
def test_a_telemetry_path_that_cannot_work_stops_the_exporter(tmp_path: Path, path: str) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("brokers: []\n")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "mqtt_cert_exporter",
            f"--config.file={config}",
            f"--web.telemetry-path={path}",
        ],
        capture_output=True,
        cwd=ROOT,
        timeout=30,
    )
    assert run.returncode == 2
    assert b"--web.telemetry-path" in run.stderr


#: What systemd does for a .socket unit: the listening socket as fd 3, LISTEN_FDS=1, LISTEN_PID=the
#: exporter's pid (known only after fork: the wrapper sets it and execs, keeping its pid).
SYSTEMD_WRAPPER = """
import os, sys
os.dup2(int(sys.argv[1]), 3)
os.environ["LISTEN_FDS"] = "1"
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.executable, [sys.executable, "-m", "mqtt_cert_exporter", *sys.argv[2:]])
"""


def test_systemd_socket_activation(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    log = tmp_path / "exporter.log"
    process = start_wrapped(
        SYSTEMD_WRAPPER,
        log,
        str(listener.fileno()),
        f"--config.file={config}",
        "--web.systemd-socket",
        "--web.listen-address=127.0.0.1:1",  # ignored: the passed socket wins
        pass_fds=(listener.fileno(),),
    )
    listener.close()  # the exporter holds its own copy
    try:
        wait_for(lambda: "msg=started" in log.read_text())
        assert f"url=http://127.0.0.1:{port}/metrics" in log.read_text()
        assert fetch(f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0


def test_an_address_in_use_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("brokers: []\n")
    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    with taken:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "mqtt_cert_exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            capture_output=True,
            cwd=ROOT,
            timeout=30,
        )
    assert run.returncode == 1
    assert f"--web.listen-address: cannot listen on 127.0.0.1:{port}: ".encode() in run.stderr
    assert b"Traceback" not in run.stderr


def test_systemd_socket_without_sockets_is_a_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("brokers: []\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith("LISTEN_")}
    run = subprocess.run(
        [sys.executable, "-m", "mqtt_cert_exporter", f"--config.file={config}", "--web.systemd-socket"],
        capture_output=True,
        cwd=ROOT,
        env=env,
        timeout=30,
    )
    assert run.returncode == 1
    assert b"--web.systemd-socket: no sockets passed (LISTEN_PID/LISTEN_FDS unset)" in run.stderr
    assert b"Traceback" not in run.stderr


# --------------------------------------------------------------------------------------------------
# fd exhaustion is the exporter's problem, not the broker's (issue 18.13)

#: A low open-file limit and a connection cap above it: held HTTP connections take every descriptor.
STARVED_WRAPPER = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
os.execv(sys.executable, [sys.executable, "-m", "mqtt_cert_exporter", *sys.argv[1:]])
"""


def scrape_when_possible(url: str) -> str | None:
    """The metrics text, or None while the exporter cannot take a connection yet (it is closing the
    held ones: libuv resets connections it cannot accept)."""
    try:
        status, _, body = fetch(url)
    except OSError:
        return None
    return body.decode() if status == 200 else None


def test_running_out_of_descriptors_is_reported_as_the_exporters_own_problem(
    lab: Lab, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good", interval="1s"))
    log = tmp_path / "exporter.log"
    process = start_wrapped(
        STARVED_WRAPPER,
        log,
        f"--config.file={config}",
        "--web.listen-address=127.0.0.1:0",
        "--web.max-connections=1000",
    )
    held: list[socket.socket] = []
    try:
        url = wait_for(lambda: re.search(r"url=(http://\S+)/metrics", log.read_text()))[1]
        wait_for(lambda: probe_success(fetch(url + "/metrics")[2].decode(), "good") == 1)
        host, port = url.split("//")[1].split(":")
        for _ in range(80):
            held.append(socket.create_connection((host, int(port)), timeout=10))
        wait_for(lambda: "the exporter is out of file descriptors" in log.read_text(), timeout=30)
        for sock in held:
            sock.close()
        held.clear()
        text = wait_for(lambda: scrape_when_possible(url + "/metrics"))
        assert probe_success(text, "good") == 1  # the broker keeps its result
        exhausted = [
            sample.value
            for family in parse_text(text)
            for sample in family.samples
            if sample.name == "mqtt_cert_exporter_fd_exhaustion_total"
        ]
        assert exhausted and exhausted[0] >= 1
        assert "unreachable" not in log.read_text()
    finally:
        for sock in held:
            sock.close()
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
