"""A real amqtt broker (PyPI ``amqtt`` 0.12, a dev dependency) on ephemeral loopback ports: MQTT over TLS
and MQTT over secure WebSockets, users from a password file. A broker that speaks MQTT 3.1.1 only.

Facts this module relies on (amqtt 0.12.1): its TLS listeners ask every client for a certificate
(``CERT_OPTIONAL``) and need ``cafile``; it answers a v5 CONNECT without credentials with the 3.1.1
code 1 and one with credentials not at all; every authentication failure is CONNACK 5. The password
file takes argon2 hashes, written here with the cheapest parameters so logins stay fast.

The broker runs in its own Python process (``sys.executable``), started by a small bootstrap that
hashes the lab's passwords with amqtt's own dependency and then runs amqtt's command-line entry point.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from mqtt_cert_exporter.lab.ports import free_port
from tests.lab.daemon import LabBroker, LabBrokerError, LabProcess

_BOOTSTRAP = """\
import json, sys
from argon2 import PasswordHasher
from amqtt.scripts.broker_script import main
plain, hashed = sys.argv[1], sys.argv[2]
hasher = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
users = json.loads(open(plain).read())
with open(hashed, "w") as out:
    out.writelines(f"{name}:{hasher.hash(password)}\\n" for name, password in users.items())
sys.argv = ["amqtt", "-c", sys.argv[3]]
main()
"""


def amqtt_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


class Amqtt(LabBroker):
    """One amqtt broker process. ``users``: name -> password (anonymous logins are refused)."""

    def __init__(
        self, workdir: Path, *, certfile: Path, keyfile: Path, cafile: Path, users: Mapping[str, str]
    ) -> None:
        self.workdir = workdir
        self.certfile, self.keyfile, self.cafile = certfile, keyfile, cafile
        self.users = dict(users)
        super().__init__()

    def start(self, timeout: float = 30) -> None:
        if not amqtt_available():
            raise LabBrokerError("amqtt is not installed: it is a dev dependency (pip install -e '.[dev]')")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.mqtts_port, self.wss_port = free_port(self.host), free_port(self.host)
        plain = self.workdir / "users.json"
        plain.write_text(json.dumps(self.users))
        plain.chmod(0o600)
        config = self.workdir / "amqtt.yaml"
        config.write_text(json.dumps(self._config()))  # JSON is YAML
        command = [sys.executable, "-c", _BOOTSTRAP, str(plain), str(self.workdir / "passwd"), str(config)]
        self.process = LabProcess(
            command, self.workdir / "amqtt.log", env=_environment(), cwd=self.workdir, what="amqtt"
        )
        self.process.wait_for_ports([(self.host, self.mqtts_port), (self.host, self.wss_port)], timeout)

    def log_text(self) -> str:
        try:
            return (self.workdir / "amqtt.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _config(self) -> dict[str, object]:
        tls = {
            "ssl": True,
            "certfile": str(self.certfile),
            "keyfile": str(self.keyfile),
            "cafile": str(self.cafile),
        }
        return {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{self.host}:{self.mqtts_port}", **tls},
                "wss": {"type": "ws", "bind": f"{self.host}:{self.wss_port}", **tls},
            },
            "plugins": {
                "amqtt.plugins.logging_amqtt.EventLoggerPlugin": {},
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": False},
                "amqtt.plugins.authentication.FileAuthPlugin": {
                    "password_file": str(self.workdir / "passwd")
                },
            },
        }


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1"}
