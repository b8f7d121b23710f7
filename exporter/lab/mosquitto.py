"""Real Mosquitto brokers for tests, the demo and the benchmark: one process, many loopback listeners.

Facts about Mosquitto 2.0.11 (Debian 12) this module relies on, measured here:

* ``set_tcp_nodelay true``: otherwise TLS 1.3 CONNECT→CONNACK stalls ~40 ms (Nagle vs. delayed ACK).
* Started as root it drops to the ``mosquitto`` user unless the config says ``user root``.
* ``tls_version tlsv1.2`` is only a *minimum*; a TLS 1.2-only broker needs a process whose
  ``OPENSSL_CONF`` sets ``MaxProtocol = TLSv1.2`` (``tls12_only=True``).
* RSA-1024 keys and SHA-1-signed certificates do not load at Debian's default OpenSSL security level;
  ``ciphers DEFAULT:@SECLEVEL=0`` on the listener lets them load.
* ``protocol websockets`` listeners (libwebsockets) bind ``*`` (all interfaces, dual stack) when given
  an IPv4 address; ``socket_domain ipv4`` makes them honour it. IPv6 addresses are honoured as is.
* A configuration whose listeners are *all* websockets fails with "Unable to start any listening
  sockets": such a broker gets an extra hidden plaintext listener on 127.0.0.1.
* "mosquitto version X running" is logged once every listener is bound.
* SIGHUP ("Reloading config.") re-reads the certfile/keyfile of plain TLS listeners: new connections get
  the new certificate at once (symlinks are followed again, as with certbot's live/ -> archive/).
  Websockets listeners keep serving the certificate they started with until a restart.
* ``tls_version tlsv1.1`` alone does not make TLS 1.1 work on Debian (the handshake ends with an
  internal_error alert at security level 2); with ``ciphers DEFAULT:@SECLEVEL=0`` it does, without any
  OPENSSL_CONF. TLS 1.0 cannot be enabled (there is no ``tlsv1`` value).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import signal
import subprocess
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

from mqtt_cert_exporter.lab.ports import free_port, port_open

DEFAULT_BINARY = "/usr/sbin/mosquitto"
STOP_GRACE_SECONDS = 5.0
LOG_TAIL_LINES = 25
ANCHOR_LISTENER = "_anchor"  # hidden plaintext listener for all-websockets brokers
_PORT_TAKEN_MARKERS = ("Address already in use", "Unable to create websockets listener")
# mosquitto_passwd (2.0) writes "$7$" lines: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, 64-byte hash.
_PBKDF2_ITERATIONS = 101
_SALT_BYTES = 12
_HASH_BYTES = 64


class MosquittoError(RuntimeError):
    """Mosquitto could not be started (the message carries the tail of its log)."""


class PortInUseError(MosquittoError):
    """A listener's port was already in use (for auto ports: taken between free_port() and bind())."""


def mosquitto_binary() -> str | None:
    """The mosquitto executable: from PATH, else Debian's /usr/sbin/mosquitto (not in a user's PATH)."""
    found = shutil.which("mosquitto")
    if found is not None:
        return found
    return DEFAULT_BINARY if os.access(DEFAULT_BINARY, os.X_OK) else None


def _mosquitto_passwd_binary() -> str | None:
    for candidate in (shutil.which("mosquitto_passwd"), "/usr/bin/mosquitto_passwd"):
        if candidate is not None and os.access(candidate, os.X_OK):
            return candidate
    return None


def password_line(username: str, password: str) -> str:
    """One password-file line in the PBKDF2-SHA512 ("$7$") format Mosquitto 2 accepts."""
    salt = os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ITERATIONS, _HASH_BYTES)
    salt64, digest64 = base64.b64encode(salt).decode(), base64.b64encode(digest).decode()
    return f"{username}:$7${_PBKDF2_ITERATIONS}${salt64}${digest64}"


def make_password_file(path: Path, users: Mapping[str, str], *, use_tool: bool = True) -> Path:
    """Write a Mosquitto password file for ``users`` (name -> clear-text password); return ``path``.

    Uses ``mosquitto_passwd -b`` when available (and ``use_tool``), else writes the same format itself.
    """
    for username, password in users.items():
        if not username or ":" in username or any(c in username + password for c in "\r\n"):
            raise ValueError(f"unusable user name or password for {username!r}")
    path = Path(path)
    tool = _mosquitto_passwd_binary() if use_tool else None
    if tool is None:
        path.write_text("".join(password_line(user, pw) + "\n" for user, pw in users.items()))
    else:
        path.write_text("")
        for username, password in users.items():
            result = subprocess.run(
                [tool, "-b", str(path), username, password], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise RuntimeError(f"mosquitto_passwd failed for {username!r}: {result.stderr.strip()}")
    path.chmod(0o644)
    return path


@dataclass(frozen=True)
class Listener:
    """One Mosquitto listener. ``cert=None`` makes a plaintext listener."""

    name: str
    port: int = 0  # 0 -> a free ephemeral port is picked at start()
    host: str = "127.0.0.1"  # bind address; "::1" works too
    cert: Path | None = None  # certfile; may be a chain file (leaf + intermediates): the chain is served
    key: Path | None = None
    cafile: Path | None = None  # CA(s) for client certificates (mTLS)
    require_certificate: bool = False
    password_file: Path | None = None  # allow_anonymous false when set
    websockets: bool = False
    ciphers: str | None = None  # e.g. "DEFAULT:@SECLEVEL=0" so weak keys / SHA-1 certificates load
    acl_file: Path | None = None
    # Mosquitto 2.0.11 accepts tlsv1.3, tlsv1.2 (a minimum: 1.3 still negotiates) or tlsv1.1. A listener
    # that accepts TLS 1.1 on Debian needs tls_version="tlsv1.1" AND ciphers="DEFAULT:@SECLEVEL=0"
    # (without the ciphers it answers TLS 1.1 with an internal_error alert); TLS 1.0 cannot be enabled.
    tls_version: str = "tlsv1.2"
    # Write cert/key paths as given (absolute, symlinks kept) instead of resolved: Mosquitto then follows
    # the symlinks itself at start and on SIGHUP, as with certbot's live/ -> archive/ layout.
    keep_symlinks: bool = False

    def __post_init__(self) -> None:
        if not self.name or any(c.isspace() for c in self.name):
            raise ValueError(f"listener name {self.name!r} must be non-empty without spaces")
        if (self.cert is None) != (self.key is None):
            raise ValueError(f"listener {self.name!r}: cert and key go together")
        if self.cert is None and (self.cafile or self.require_certificate or self.ciphers):
            raise ValueError(f"listener {self.name!r}: cafile/require_certificate/ciphers need a cert")
        if self.require_certificate and self.cafile is None:
            raise ValueError(f"listener {self.name!r}: require_certificate needs a cafile")

    @property
    def tls(self) -> bool:
        return self.cert is not None

    def config_lines(self, port: int) -> list[str]:
        """This listener's block of mosquitto.conf (with ``per_listener_settings true``)."""
        lines = [f"listener {port} {self.host}"]
        if self.websockets:
            lines.append("protocol websockets")
            if ":" not in self.host:
                # Without it libwebsockets binds every interface and ignores the IPv4 address.
                lines.append("socket_domain ipv4")
        if self.password_file is None:
            lines.append("allow_anonymous true")
        else:
            lines += ["allow_anonymous false", f"password_file {_conf_path(self.password_file)}"]
        if self.acl_file is not None:
            lines.append(f"acl_file {_conf_path(self.acl_file)}")
        if self.cert is not None and self.key is not None:
            lines += [
                f"certfile {_conf_path(self.cert, keep_symlinks=self.keep_symlinks)}",
                f"keyfile {_conf_path(self.key, keep_symlinks=self.keep_symlinks)}",
                f"tls_version {_conf_value(self.tls_version)}",  # a minimum in 2.0.11, not an exact version
            ]
            if self.cafile is not None:
                lines.append(f"cafile {_conf_path(self.cafile)}")
            if self.require_certificate:
                lines += ["require_certificate true", "use_identity_as_username false"]
            if self.ciphers is not None:
                lines.append(f"ciphers {_conf_value(self.ciphers)}")
        return lines


def _conf_value(value: str) -> str:
    if "\n" in value or "\r" in value:
        raise ValueError(f"configuration values cannot contain newlines: {value!r}")
    return value


def _conf_path(path: Path, *, keep_symlinks: bool = False) -> str:
    return _conf_value(str(Path(path).absolute() if keep_symlinks else Path(path).resolve()))


def _format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log written)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _terminate(process: subprocess.Popen[bytes], log: IO[bytes]) -> None:
    """SIGTERM, wait, SIGKILL after the grace period. Safe to call on an exited process."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    finally:
        log.close()


OPENSSL_TLS12_ONLY = """\
# Written by exporter.lab: caps every TLS context of this process at TLS 1.2.
openssl_conf = openssl_init

[openssl_init]
ssl_conf = ssl_section

[ssl_section]
system_default = system_default_section

[system_default_section]
MaxProtocol = TLSv1.2
"""


class Mosquitto:
    """One mosquitto process with many listeners. Context manager; also start()/stop()."""

    def __init__(
        self,
        listeners: Sequence[Listener],
        workdir: Path,
        *,
        tls12_only: bool = False,
        binary: str | None = None,
    ) -> None:
        if not listeners:
            raise ValueError("a broker needs at least one listener")
        names = [listener.name for listener in listeners]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates or ANCHOR_LISTENER in names:
            raise ValueError(f"listener names must be unique and not {ANCHOR_LISTENER!r}: {duplicates}")
        self._listeners = list(listeners)
        if all(listener.websockets for listener in listeners):
            self._listeners.append(Listener(ANCHOR_LISTENER))
        self.workdir = Path(workdir)
        self.tls12_only = tls12_only
        self._binary = binary
        self._ports: dict[str, int] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize[[subprocess.Popen[bytes], IO[bytes]], Mosquitto] | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 10) -> None:
        """Write mosquitto.conf, start mosquitto and wait until every listener accepts TCP.

        Raises :class:`MosquittoError` (with the log's tail) if mosquitto exits or is not ready in
        ``timeout`` seconds. If an auto-picked port was taken meanwhile, retries once with new ports.
        """
        if self.running:
            raise RuntimeError(f"mosquitto already running (pid {self.pid})")
        binary = self._binary or mosquitto_binary()
        if binary is None:
            raise MosquittoError("mosquitto not found; run scripts/ensure-system-packages.sh")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._assign_ports(fresh=False)
        try:
            self._launch(binary, timeout)
        except PortInUseError:
            if all(listener.port for listener in self._listeners):
                raise
            self._assign_ports(fresh=True)
            self._launch(binary, timeout)

    def stop(self) -> None:
        """SIGTERM, wait, SIGKILL after 5 s. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        if self._process is None:
            raise RuntimeError("mosquitto was not started")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        """Mosquitto's log (its stderr goes there too)."""
        return self.workdir / "mosquitto.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "mosquitto.conf"

    # ------------------------------------------------------------------ addresses

    def listener(self, name: str) -> Listener:
        """The listener called ``name``, with its actual port once started."""
        for listener in self._listeners:
            if listener.name == name:
                return replace(listener, port=self._ports.get(name, listener.port))
        raise KeyError(f"no listener named {name!r}")

    def port(self, name: str) -> int:
        port = self.listener(name).port
        if not port:
            raise RuntimeError(f"listener {name!r} has no port yet: start() first")
        return port

    def address(self, name: str) -> str:
        """``127.0.0.1:PORT`` or ``[::1]:PORT``."""
        return _format_address(self.listener(name).host, self.port(name))

    # ------------------------------------------------------------------ internals

    def _assign_ports(self, *, fresh: bool) -> None:
        taken: set[tuple[str, int]] = {(lst.host, lst.port) for lst in self._listeners if lst.port}
        for listener in self._listeners:
            if listener.port:
                self._ports[listener.name] = listener.port
            elif fresh or listener.name not in self._ports:
                port = free_port(listener.host)
                while (listener.host, port) in taken:
                    port = free_port(listener.host)
                self._ports[listener.name] = port
            taken.add((listener.host, self._ports[listener.name]))

    def _config(self) -> str:
        lines = [
            "# Written by exporter.lab.mosquitto: a throw-away test broker.",
            "per_listener_settings true",
            "persistence false",
            "set_tcp_nodelay true",
            f"log_dest file {_conf_path(self.log_path)}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to "mosquitto" and may not read our files
        for listener in self._listeners:
            lines += ["", *listener.config_lines(self._ports[listener.name])]
        return "\n".join(lines) + "\n"

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.tls12_only:
            conf = self.workdir / "openssl-tls12-only.cnf"
            conf.write_text(OPENSSL_TLS12_ONLY)
            env["OPENSSL_CONF"] = str(conf.resolve())
        return env

    def _launch(self, binary: str, timeout: float) -> None:
        self.config_path.write_text(self._config())
        self.log_path.write_bytes(b"")
        log = self.log_path.open("ab")  # O_APPEND: mosquitto appends to the same file
        try:
            process = subprocess.Popen(
                [binary, "-c", str(self.config_path.resolve())],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd=self.workdir,
            )
        except BaseException:
            log.close()
            raise
        self._process = process
        self._finalizer = weakref.finalize(self, _terminate, process, log)
        try:
            self._wait_ready(process, timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {lst.name: (lst.host, self._ports[lst.name]) for lst in self._listeners}
        while True:
            returncode = process.poll()
            if returncode is not None:
                tail = log_tail(self.log_path)
                error = PortInUseError if any(m in tail for m in _PORT_TAKEN_MARKERS) else MosquittoError
                raise error(
                    f"mosquitto exited with status {returncode} during start-up "
                    f"(config {self.config_path}); log tail:\n{tail}"
                )
            # "running" is logged once all listeners are bound: only then can a port that accepts be
            # trusted to be ours (and not a stranger's that took it after free_port()).
            if " running" in self.log_path.read_text(errors="replace"):
                for name, (host, port) in list(pending.items()):
                    if port_open(host, port, timeout=0.2):
                        del pending[name]
                if not pending:
                    return
            if time.monotonic() >= deadline:
                waiting = ", ".join(_format_address(*address) for address in pending.values())
                raise MosquittoError(
                    f"mosquitto not ready after {timeout:g} s (waiting for {waiting}); "
                    f"log tail:\n{log_tail(self.log_path)}"
                )
            time.sleep(0.02)
