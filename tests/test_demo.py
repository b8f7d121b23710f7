"""`mqtt-cert-exporter demo`: starts, serves metrics for all its brokers, leaves nothing behind."""

from __future__ import annotations

import io
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from mqtt_cert_exporter import demo
from tests.conftest import ROOT

DEMO_BROKERS = (
    "good",
    "expiring",
    "expired",
    "untrusted-ca",
    "wrong-hostname",
    "missing-intermediate",
    "password-auth",
)
EXPECTED_SERIES = (
    'mqtt_broker_probe_success{broker="good"} 1.0',
    'mqtt_broker_probe_success{broker="expiring"} 1.0',
    'mqtt_broker_probe_success{broker="password-auth"} 1.0',
    'mqtt_broker_connect_success{broker="password-auth"} 1.0',
    'mqtt_broker_probe_success{broker="expired"} 0.0',
    'mqtt_broker_tls_trust_problem{broker="expired",problem="expired"} 1.0',
    'mqtt_broker_tls_trust_problem{broker="untrusted-ca",problem="unknown_ca"} 1.0',
    'mqtt_broker_tls_trust_problem{broker="wrong-hostname",problem="hostname_mismatch"} 1.0',
    'mqtt_broker_tls_trust_problem{broker="missing-intermediate",problem="incomplete_chain"} 1.0',
)


class DemoProcess:
    """The demo as a user starts it; stdout is read line by line in a thread."""

    def __init__(self, log_path: Path) -> None:
        self.log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mqtt_cert_exporter", "demo", "--web.listen-address", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
            env={key: value for key, value in os.environ.items() if key != "NO_COLOR"},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for_line(self, prefix: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"no line starting {prefix!r}; output so far:\n" + "\n".join(self.output)
                ) from None
            self.output.append(line)
            if line.startswith(prefix):
                return line.removeprefix(prefix).strip()

    def rest_of_output(self, timeout: float = 5) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.output.append(self.lines.get(timeout=0.1))
            except queue.Empty:
                if self.process.poll() is not None:
                    break
        return "\n".join(self.output)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.log.close()


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_demo_serves_every_broker_and_leaves_nothing_behind(
    tmp_path: Path, stop_signal: signal.Signals
) -> None:
    started = DemoProcess(tmp_path / "demo.stderr")
    try:
        workdir = Path(started.wait_for_line("temporary directory:"))
        mosquitto_pid = int(started.wait_for_line("mosquitto pid:"))
        assert workdir.is_dir() and process_exists(mosquitto_pid)
        page = started.wait_for_line("status page:").split()[0]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", page)
        assert not any(line.startswith("metrics:") for line in started.output)  # the page's URL comes first
        url = started.wait_for_line("metrics:")
        assert url == page + "metrics"
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/metrics", url)
        report = "\n".join(started.output)
        for name in DEMO_BROKERS:
            assert re.search(rf"^{re.escape(name)} \(localhost:\d+\)$", report, re.MULTILINE), name
        assert "7 brokers: 2 OK, 1 WARNING, 4 CRITICAL" in report
        assert "Let's Encrypt use fullchain.pem" in report  # the missing intermediate's fix
        assert not re.search(r"\x1b\[", report)  # stdout is a pipe

        deadline = time.monotonic() + 15
        while True:
            metrics = scrape(url)
            missing = [series for series in EXPECTED_SERIES if series not in metrics]
            if not missing:
                break
            assert time.monotonic() < deadline, f"missing {missing} in:\n{metrics}"
            time.sleep(0.2)
        for name in DEMO_BROKERS:
            assert f'mqtt_broker_probe_success{{broker="{name}"}}' in metrics
        status_page = scrape(page)
        assert "4 CRITICAL" in status_page and "1 WARNING" in status_page and "2 OK" in status_page

        started.process.send_signal(stop_signal)
        assert started.process.wait(timeout=10) == 0
        output = started.rest_of_output()
        assert "demo stopped" in output
        assert not process_exists(mosquitto_pid)
        assert not workdir.exists()
    finally:
        started.stop()


def test_without_mosquitto_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "mosquitto_binary", lambda: None)
    err = io.StringIO()
    with redirect_stderr(err):
        assert demo.main([]) == 1
    assert "sudo apt-get install mosquitto" in err.getvalue()
