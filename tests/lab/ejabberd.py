"""A real ejabberd (Debian's ``ejabberd`` 23.01, ``mod_mqtt``) on ephemeral loopback ports, unprivileged,
with state of its own: a broker that speaks MQTT 5 and 3.1.1, over TLS and over secure WebSockets.

Facts this module relies on (measured here): it starts in about 3 s; every path comes from ejabberdctl's
flags (--config-dir, --config, --ctl-config, --spool, --logs) and its node name, distribution interface
and epmd address from the ctl config; run as the ``ejabberd`` user (``runuser``) ejabberdctl starts the
Erlang VM itself, in our process group, so stopping the group stops it. ``certfiles`` takes key and
certificate in one PEM. Users are registered with ``ejabberdctl register`` once it runs.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path

from mqtt_cert_exporter.lab.ports import free_port
from tests.lab.daemon import LabBrokerError, LabProcess, ServiceUserBroker

CTL = "/usr/sbin/ejabberdctl"
SERVICE_USER = "ejabberd"
DOMAIN = "localhost"


def ejabberd_available() -> bool:
    return os.access(CTL, os.X_OK)


class Ejabberd(ServiceUserBroker):
    """One ejabberd node. ``users``: name -> password (registered in the ``localhost`` domain)."""

    websocket_path = "/mqtt"
    service_user = SERVICE_USER

    def __init__(self, *, certfile: Path, keyfile: Path, users: Mapping[str, str]) -> None:
        super().__init__()
        self.certfile, self.keyfile = certfile, keyfile
        self.users = dict(users)

    def start(self, timeout: float = 60) -> None:
        if not ejabberd_available():
            raise LabBrokerError("ejabberd is not installed: bash scripts/ensure-system-packages.sh brokers")
        workdir = self.make_workdir("mqtt-lab-ejabberd-")
        self.mqtts_port, self.wss_port = free_port(self.host), free_port(self.host)
        self._write_files()
        command = self.as_service_user([CTL, *self._flags(), "foreground"])
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(workdir)}
        self.process = LabProcess(command, workdir / "console.log", env=env, cwd=workdir, what="ejabberd")
        self.process.wait_for_ports([(self.host, self.mqtts_port), (self.host, self.wss_port)], timeout)
        for name, password in self.users.items():
            self._ctl("register", name, DOMAIN, password)

    def _flags(self) -> list[str]:
        assert self.workdir is not None
        work = self.workdir
        return [
            "--config-dir", str(work),
            "--config", str(work / "ejabberd.yml"),
            "--ctl-config", str(work / "ejabberdctl.cfg"),
            "--spool", str(work / "spool"),
            "--logs", str(work / "logs"),
        ]  # fmt: skip

    def _ctl(self, *arguments: str) -> None:
        command = self.as_service_user([CTL, *self._flags(), *arguments])
        assert self.workdir is not None
        result = subprocess.run(
            command, capture_output=True, text=True, cwd=self.workdir, check=False, timeout=60
        )
        if result.returncode != 0:
            raise LabBrokerError(f"ejabberdctl {arguments[0]} failed: {result.stdout}{result.stderr}")

    def _write_files(self) -> None:
        assert self.workdir is not None
        work = self.workdir
        for directory in ("spool", "logs"):
            (work / directory).mkdir()
        pem = work / "server.pem"
        pem.write_bytes(self.keyfile.read_bytes() + self.certfile.read_bytes())
        tls = f'    ip: "{self.host}"\n    tls: true\n'
        (work / "ejabberd.yml").write_text(
            f"hosts: [{DOMAIN}]\n"
            "loglevel: info\n"
            f"certfiles: ['{pem}']\n"
            "auth_method: internal\n"
            "listen:\n"
            f"  -\n    port: {self.mqtts_port}\n{tls}    module: mod_mqtt\n"
            f"  -\n    port: {self.wss_port}\n{tls}    module: ejabberd_http\n"
            "    request_handlers:\n      /mqtt: mod_mqtt\n"
            "modules:\n  mod_mqtt: {}\n"
        )
        (work / "ejabberdctl.cfg").write_text(
            f"ERLANG_NODE=mqttlab{uuid.uuid4().hex[:10]}@localhost\n"
            "INET_DIST_INTERFACE=127.0.0.1\n"
            "ERL_EPMD_ADDRESS=127.0.0.1\n"
        )
