"""A real RabbitMQ (Debian's ``rabbitmq-server`` 3.10) with its MQTT and Web-MQTT plugins, unprivileged,
on ephemeral loopback ports, with state of its own: a broker that speaks MQTT 3.1.1 only.

Facts this module relies on (measured on Debian 12, RabbitMQ 3.10.8, Erlang 25):

* Every path comes from the environment (``RABBITMQ_*``, ``HOME``), so a lab node shares nothing with a
  system one; the Erlang distribution listens on loopback only (``inet_dist_use_interface``,
  ``ERL_EPMD_ADDRESS``). Started as root it must run as the ``rabbitmq`` user, whose files these are.
* Users and permissions come from a definitions file loaded at boot (no slow ``rabbitmqctl`` calls):
  password hashes are base64(salt + SHA-256(salt + password)) with a 4-byte salt.
* The certfile holds the leaf only; Erlang adds the chain from ``cacertfile``. Web-MQTT serves ``/ws``.
* Start-up takes 10-20 s on two busy cores: start one node per test session.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mqtt_cert_exporter.lab.ports import free_port
from tests.lab.daemon import LabBrokerError, LabProcess, ServiceUserBroker

SERVER_BINARY = "/usr/lib/rabbitmq/bin/rabbitmq-server"
SERVICE_USER = "rabbitmq"
_PLUGINS = "[rabbitmq_mqtt,rabbitmq_web_mqtt]."


def rabbitmq_binary() -> str | None:
    """Debian's rabbitmq-server start script (not /usr/sbin's wrapper, which insists on a service user)."""
    return SERVER_BINARY if os.access(SERVER_BINARY, os.X_OK) else None


@dataclass(frozen=True)
class RabbitUser:
    """A user of the default vhost with regular-expression permissions (RabbitMQ's own grammar).

    ``configure="^$"`` forbids declaring the queue an MQTT subscription needs: its SUBSCRIBE is refused."""

    name: str
    password: str
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's ``rabbit_password_hashing_sha256`` format."""
    salt = os.urandom(4) if salt is None else salt
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


@dataclass(frozen=True)
class RabbitTls:
    """The broker's certificate: leaf only in ``certfile``; ``cacertfile`` supplies the chain."""

    certfile: Path
    keyfile: Path
    cacertfile: Path


class RabbitMQ(ServiceUserBroker):
    """One lab RabbitMQ node: MQTT over TLS (``mqtts_port``) and Web-MQTT over TLS (``wss_port``)."""

    websocket_path = "/ws"
    service_user = SERVICE_USER

    def __init__(self, tls: RabbitTls, users: Sequence[RabbitUser]) -> None:
        self.tls = tls
        self.users = tuple(users)
        super().__init__()

    def start(self, timeout: float = 90) -> None:
        binary = rabbitmq_binary()
        if binary is None:
            raise LabBrokerError(
                "rabbitmq-server is not installed: bash scripts/ensure-system-packages.sh brokers"
            )
        self.make_workdir("mqtt-lab-rabbitmq-")
        self.mqtts_port, self.wss_port, plain_ws, dist = (free_port(self.host) for _ in range(4))
        env = self._write_files(plain_ws, dist)
        # runuser resets the environment: the node's paths go on the command line too
        command = self.as_service_user(["env", *(f"{k}={v}" for k, v in env.items()), binary])
        assert self.workdir is not None
        self.process = LabProcess(
            command, self.workdir / "stdout.log", env=env, cwd=self.workdir, what="rabbitmq"
        )
        self.process.wait_for_ports([(self.host, self.mqtts_port), (self.host, self.wss_port)], timeout)

    def node_log_text(self) -> str:
        """The node's own log, in the order it logged (without the console and the upgrade log)."""
        if self.workdir is None:
            return ""
        return "\n".join(
            path.read_text(errors="replace")
            for path in sorted((self.workdir / "log").glob("*.log"))
            if not path.name.endswith("_upgrade.log")
        )

    def _write_files(self, plain_ws_port: int, dist_port: int) -> dict[str, str]:
        assert self.workdir is not None
        work = self.workdir
        for directory in ("home", "mnesia", "log"):
            (work / directory).mkdir()
        certs = {}
        for name, source in (
            ("cert", self.tls.certfile),
            ("key", self.tls.keyfile),
            ("ca", self.tls.cacertfile),
        ):
            target = work / f"{name}.pem"
            shutil.copyfile(source, target)
            target.chmod(0o644)
            certs[name] = target
        definitions = {
            "vhosts": [{"name": "/"}],
            "users": [
                {
                    "name": user.name,
                    "password_hash": password_hash(user.password),
                    "hashing_algorithm": "rabbit_password_hashing_sha256",
                    "tags": [],
                }
                for user in self.users
            ],
            "permissions": [
                {"user": u.name, "vhost": "/", "configure": u.configure, "write": u.write, "read": u.read}
                for u in self.users
            ],
        }
        (work / "definitions.json").write_text(json.dumps(definitions))
        ssl = {"cacertfile": certs["ca"], "certfile": certs["cert"], "keyfile": certs["key"]}
        lines = [
            "listeners.tcp = none",
            "loopback_users = none",
            f"load_definitions = {work / 'definitions.json'}",
            "mqtt.listeners.tcp = none",
            f"mqtt.listeners.ssl.default = {self.host}:{self.mqtts_port}",
            "mqtt.allow_anonymous = false",
            *(f"ssl_options.{key} = {path}" for key, path in ssl.items()),
            "ssl_options.verify = verify_none",
            f"web_mqtt.tcp.port = {plain_ws_port}",
            f"web_mqtt.tcp.ip = {self.host}",
            f"web_mqtt.ssl.port = {self.wss_port}",
            f"web_mqtt.ssl.ip = {self.host}",
            *(f"web_mqtt.ssl.{key} = {path}" for key, path in ssl.items()),
        ]
        (work / "rabbitmq.conf").write_text("\n".join(lines) + "\n")
        (work / "enabled_plugins").write_text(_PLUGINS + "\n")
        loopback_dist = "-kernel inet_dist_use_interface {127,0,0,1}"
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(work / "home"),
            "RABBITMQ_NODENAME": f"mqttlab-{uuid.uuid4().hex[:10]}@localhost",
            "RABBITMQ_CONFIG_FILE": str(work / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(work / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(work / "mnesia"),
            "RABBITMQ_LOG_BASE": str(work / "log"),
            "RABBITMQ_PID_FILE": str(work / "rabbitmq.pid"),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_ADDRESS": self.host,
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback_dist,
            "RABBITMQ_CTL_ERL_ARGS": loopback_dist,
        }
