"""Secrets never appear anywhere: a full run, every output grepped for the password."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, ROOT, Lab, start_exporter, wait_for

pytestmark = pytest.mark.slow


def test_password_is_in_no_output_of_a_full_run(lab: Lab, tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    good = lab.broker("password_ok")
    wrong = lab.broker("password_wrong")
    config = tmp_path / "config.yaml"
    body = (
        "defaults: {interval: 2s, timeout: 1s}\nbrokers:\n"
        f"  - name: right\n    address: '{good.address}'\n"
        f"    tls: {{ca_file: '{good.tls.ca_file}', server_name: localhost}}\n"
        f"    mqtt: {{username: monitor, password_file: '{password_file}'}}\n"
        f"  - name: env\n    address: '{good.address}'\n"
        f"    tls: {{ca_file: '{good.tls.ca_file}', server_name: localhost}}\n"
        "    mqtt: {username: monitor, password: '${MQTT_TEST_PASSWORD}', protocol: '3.1.1'}\n"
        f"  - name: refused\n    address: '{wrong.address}'\n"
        f"    tls: {{ca_file: '{wrong.tls.ca_file}', server_name: localhost}}\n"
        f"    mqtt: {{username: {PASSWORD}-not-a-user, password_file: '{password_file}'}}\n"
    )
    config.write_text(body)
    outputs: list[str] = []
    process = start_exporter(config, tmp_path, "--log.level=debug", "--log.format=json")
    try:
        wait_for(lambda: 'mqtt_broker_probe_success{broker="env"} 1.0' in process.get("/metrics"))
        outputs.append(process.get("/metrics"))
        # A rejected reload whose error sits right next to the password.
        config.write_text(body.replace("protocol: '3.1.1'", "protocol: '9', pasword: " + PASSWORD))
        process.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "mqtt_cert_exporter_config_last_reload_successful 0.0" in process.get("/metrics"))
        outputs.append(process.get("/metrics"))
    finally:
        process.stop()
    outputs.append(process.log())
    for args in (
        ["--config.check"],
        ["check", "--config.file", str(config)],
        ["check", "--config.file", str(config), "--output", "json"],
    ):
        command = [sys.executable, "-m", "mqtt_cert_exporter", *args]
        if args[0] == "--config.check":
            command.append(f"--config.file={config}")
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            env={"MQTT_TEST_PASSWORD": PASSWORD},
        )
        outputs += [result.stdout, result.stderr]
    assert "brokers[1].mqtt.protocol" in outputs[2] or "mqtt.protocol" in outputs[2]
    assert any("pasword" in text for text in outputs)  # the error was reported, by key name
    # The user name above contains the password as a prefix on purpose; only that form may appear.
    for text in outputs:
        assert PASSWORD not in text.replace(f"{PASSWORD}-not-a-user", ""), text[:2000]
