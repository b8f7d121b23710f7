"""A lab broker as one process group with a log file: start, wait for its ports, stop it whole.

Shared by the launchers of brokers other than Mosquitto (RabbitMQ, amqtt). Each is started in a
session of its own so that stopping it reaches every process it forked (RabbitMQ's shell scripts start
the Erlang VM as a child), and nothing else.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from mqtt_cert_exporter.lab.mosquitto import log_tail
from mqtt_cert_exporter.lab.ports import port_open

STOP_GRACE_SECONDS = 10.0


class LabBrokerError(RuntimeError):
    """A lab broker could not be started (the message carries the tail of its log)."""


def _stop_group(process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    """SIGTERM to the process group we started, SIGKILL after the grace period. Idempotent."""
    try:
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait()
        # The group may outlive its leader (the Erlang VM under a shell script).
        _kill_orphans(process.pid)
    finally:
        log.close()


def _kill_orphans(group: int) -> None:
    """SIGKILL what is left of a group whose leader was reaped. Linux keeps a PID unused while it names a
    live group, so a live process with the leader's PID is another process whose PID was reused (the
    leader may have been reaped long ago), leading a group of its own: never signalled. It once was the
    dockerd another test had started (pid_max is 32,768 here; a suite spawns thousands of processes)."""
    try:
        os.kill(group, 0)
    except ProcessLookupError:
        _signal_group(group, signal.SIGKILL)
    except PermissionError:
        pass


def _signal_group(group: int, signum: signal.Signals) -> None:
    try:
        os.killpg(group, signum)
    except (ProcessLookupError, PermissionError):
        pass


class LabProcess:
    """One started broker process (group), its log, and the ports it must open."""

    def __init__(
        self,
        command: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str],
        cwd: Path,
        what: str,
    ) -> None:
        self.log_path = log_path
        self.what = what
        log = log_path.open("ab")
        try:
            self._process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=dict(env),
                cwd=cwd,
                start_new_session=True,
            )
        except BaseException:
            log.close()
            raise
        self._finalizer = weakref.finalize(self, _stop_group, self._process, log)

    @property
    def running(self) -> bool:
        return self._process.poll() is None

    def stop(self) -> None:
        self._finalizer()

    def wait_for_ports(self, ports: Sequence[tuple[str, int]], timeout: float) -> None:
        """Wait until every (host, port) accepts TCP; LabBrokerError (with the log) when the process
        exits or the time is up."""
        deadline = time.monotonic() + timeout
        pending = list(ports)
        while pending:
            returncode = self._process.poll()
            if returncode is not None:
                raise LabBrokerError(
                    f"{self.what} exited with status {returncode} during start-up; log tail:\n"
                    f"{log_tail(self.log_path)}"
                )
            pending = [(host, port) for host, port in pending if not port_open(host, port, timeout=0.2)]
            if pending and time.monotonic() >= deadline:
                self.stop()
                waiting = ", ".join(f"{host}:{port}" for host, port in pending)
                raise LabBrokerError(
                    f"{self.what} not ready after {timeout:g} s (waiting for {waiting}); log tail:\n"
                    f"{log_tail(self.log_path)}"
                )
            if pending:
                time.sleep(0.1)


class LabBroker:
    """A broker of the lab on loopback: MQTT over TLS at ``mqtts_port``, MQTT over secure WebSockets at
    ``wss_port`` + ``websocket_path``. Context manager; also start()/stop()."""

    host = "127.0.0.1"
    websocket_path = "/mqtt"

    def __init__(self) -> None:
        self.mqtts_port = 0
        self.wss_port = 0
        self.process: LabProcess | None = None

    def __enter__(self) -> LabBroker:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 60) -> None:
        raise NotImplementedError

    def log_text(self) -> str:
        """Everything the broker logged so far."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the process group (idempotent)."""
        if self.process is not None:
            self.process.stop()
            self.process = None

    @property
    def mqtts_address(self) -> str:
        return f"{self.host}:{self.mqtts_port}"

    @property
    def wss_url(self) -> str:
        return f"wss://{self.host}:{self.wss_port}{self.websocket_path}"


class ServiceUserBroker(LabBroker):
    """A broker from a Debian package, run as its service user when we are root, with all its state in a
    fresh directory under /tmp (pytest's temporary directories are private to root). Subclasses name the
    user and write their files into ``workdir``."""

    service_user = ""

    def __init__(self) -> None:
        super().__init__()
        self.workdir: Path | None = None

    def make_workdir(self, prefix: str) -> Path:
        self.workdir = Path(tempfile.mkdtemp(prefix=prefix))
        self.workdir.chmod(0o755)
        return self.workdir

    def as_service_user(self, command: Sequence[str]) -> list[str]:
        """``command`` as the service user (when root), the workdir handed over to it first."""
        if os.geteuid() != 0:
            return list(command)
        assert self.workdir is not None
        account = pwd.getpwnam(self.service_user)
        for path in [self.workdir, *self.workdir.rglob("*")]:
            os.chown(path, account.pw_uid, account.pw_gid)
        return ["runuser", "-u", self.service_user, "--", *command]

    def stop(self) -> None:
        super().stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def log_text(self) -> str:
        if self.workdir is None:
            return ""
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.workdir.rglob("*.log")))
