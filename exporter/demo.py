"""`mqtt-cert-exporter demo`: the whole product on one machine, with nothing of the user's own.

It makes a throw-away CA and certificates in a temporary directory, starts one local Mosquitto with a
loopback listener per demo broker (good, expiring in 10 days, expired, untrusted CA, wrong hostname,
missing intermediate, password auth), writes the matching config.yaml next to them, runs the exporter
on it (serve mode, in this process) and prints, first, the URL of the status page (``/``), then the
`check` report of every demo broker, the URL of /metrics and how to stop.

Ctrl-C or SIGTERM stops the exporter and Mosquitto and removes the temporary directory. Lines a script
(or the tests) can rely on, each at the start of a line of stdout::

    temporary directory: /tmp/mqtt-cert-exporter-demo-XXXX
    mosquitto pid: 12345
    status page: http://127.0.0.1:9883/
    metrics: http://127.0.0.1:9883/metrics
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from mqtt_cert_exporter import eventloop, logs
from mqtt_cert_exporter.check import probe_all, use_colour
from mqtt_cert_exporter.config import Config, ConfigError, load_config
from mqtt_cert_exporter.lab import (
    Listener,
    Mosquitto,
    MosquittoError,
    Pki,
    make_password_file,
    mosquitto_binary,
)
from mqtt_cert_exporter.report import build_report, summary_line
from mqtt_cert_exporter.scheduler import DEFAULT_CONCURRENCY
from mqtt_cert_exporter.web.app import parse_listen_address

DEFAULT_LISTEN_ADDRESS = "127.0.0.1:9883"
INSTALL_HINT = (
    "mosquitto is not installed; the demo runs local Mosquitto brokers.\n"
    "Install it with: sudo apt-get install mosquitto   (`make run` installs it for you when run as root)"
)
DEMO_USER = "demo"
PASSWORD_FILE = "demo-password.txt"
INTERVAL = "15s"
TIMEOUT = "5s"


@dataclass(frozen=True)
class DemoBroker:
    name: str
    #: what the demo shows with it, written into config.yaml
    comment: str
    listener: Listener
    tls_lines: tuple[str, ...] = ()
    mqtt_lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class DemoSetup:
    brokers: list[DemoBroker]
    #: the demo CA's certificate, relative to the directory (where config.yaml goes)
    ca_file: str


def make_demo_brokers(directory: Path, now: dt.datetime) -> DemoSetup:
    """Certificates, password files and listeners (not started yet) of every demo broker, in ``directory``."""
    pki = Pki(directory / "pki")
    root = pki.root("Demo Root CA")
    intermediate = pki.intermediate("Demo Intermediate CA", root)
    stranger = pki.root("Untrusted Demo CA")

    def served(
        name: str,
        *,
        not_after: dt.datetime | None = None,
        dns_names: tuple[str, ...] = ("localhost",),
        ip_addresses: tuple[str, ...] = ("127.0.0.1", "::1"),
    ) -> Listener:
        """A listener serving a leaf from the demo CA followed by the intermediate."""
        leaf = pki.leaf(
            name, intermediate, not_after=not_after, dns_names=dns_names, ip_addresses=ip_addresses
        )
        return Listener(name, cert=leaf.chain_path(intermediate), key=leaf.key_path)

    good = served("good")
    untrusted = pki.leaf("untrusted-ca", stranger)
    unchained = pki.leaf("missing-intermediate", intermediate)
    password = secrets.token_urlsafe(18)
    passwords = make_password_file(directory / "mosquitto-passwords", {DEMO_USER: password})
    client_password = directory / PASSWORD_FILE
    client_password.write_text(password + "\n")
    client_password.chmod(0o600)
    brokers = [
        DemoBroker("good", "valid chain from the demo CA: the probe succeeds", good),
        DemoBroker(
            "expiring",
            "expires in 20 days: a warning (expiry_warning 28 days; critical within expiry_critical, 14)",
            served("expiring", not_after=now + dt.timedelta(days=20)),
        ),
        DemoBroker(
            "expired",
            "expired 3 days ago: still reported with its expiry date",
            served("expired", not_after=now - dt.timedelta(days=3)),
        ),
        DemoBroker(
            "untrusted-ca",
            "issued by a CA that is not in ca_file",
            Listener("untrusted-ca", cert=untrusted.cert_path, key=untrusted.key_path),
        ),
        DemoBroker(
            "wrong-hostname",
            "the certificate is for mqtt.example.com, not localhost",
            served("wrong-hostname", dns_names=("mqtt.example.com",), ip_addresses=()),
        ),
        DemoBroker(
            "missing-intermediate",
            "serves its leaf without the intermediate; the exporter knows the intermediate "
            "(as AIA provides it for public CAs) and so can tell the chain is incomplete",
            Listener("missing-intermediate", cert=unchained.cert_path, key=unchained.key_path),
            tls_lines=(f"intermediates_file: {_relative(intermediate.cert_path, directory)}",),
        ),
        DemoBroker(
            "password-auth",
            "needs a user name and password; the right ones are configured",
            Listener("password-auth", cert=good.cert, key=good.key, password_file=passwords),
            mqtt_lines=(f"username: {DEMO_USER}", f"password_file: {PASSWORD_FILE}"),
        ),
    ]
    return DemoSetup(brokers, _relative(root.cert_path, directory))


def _relative(path: Path, directory: Path) -> str:
    return str(path.relative_to(directory))


def config_yaml(brokers: Sequence[DemoBroker], ports: dict[str, int], ca_file: str) -> str:
    lines = [
        "# Written by `mqtt-cert-exporter demo`; removed when the demo stops.",
        "# Local Mosquitto listeners with good and broken certificates. Relative paths are relative to this file.",
        "defaults:",
        f"  interval: {INTERVAL}",
        f"  timeout: {TIMEOUT}",
        "  tls:",
        f"    ca_file: {ca_file}   # the demo's own CA, as the brokers' clients would have it",
        "brokers:",
    ]
    for broker in brokers:
        lines += [
            f"  # {broker.comment}",
            f"  - name: {broker.name}",
            f"    address: localhost:{ports[broker.name]}",
        ]
        if broker.tls_lines:
            lines += ["    tls:", *(f"      {line}" for line in broker.tls_lines)]
        if broker.mqtt_lines:
            lines += ["    mqtt:", *(f"      {line}" for line in broker.mqtt_lines)]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqtt-cert-exporter demo",
        description="Start local Mosquitto brokers with good and broken certificates and the exporter "
        "against them. Ctrl-C stops everything and removes the temporary files.",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN_ADDRESS,
        help=f"[host]:port to serve /metrics on (default {DEFAULT_LISTEN_ADDRESS}; port 0 picks a free one)",
    )
    parser.add_argument(
        "--warn-days",
        type=float,
        default=None,
        help="warning threshold of the printed reports (default: each broker's expiry_warning)",
    )
    logs.add_logging_flags(parser)
    # The printed reports say what the exporter's per-broker warnings would; --log.level info shows them.
    parser.set_defaults(log_level="error")
    return parser


class _StopRequested(Exception):
    """SIGTERM outside the exporter's event loop (which handles it itself)."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _StopRequested


def _say(text: str = "") -> None:
    print(text, flush=True)


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        parse_listen_address(args.listen_address)
    except ValueError as exc:
        print(f"mqtt-cert-exporter demo: {exc}", file=sys.stderr)
        return 2
    if mosquitto_binary() is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 1
    _configure_logging(args.log_level, args.log_format)

    workdir = Path(tempfile.mkdtemp(prefix="mqtt-cert-exporter-demo-"))
    mosquitto: Mosquitto | None = None
    mosquitto_pid: int | None = None
    previous_sigterm = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        _say("mqtt-cert-exporter demo")
        _say(f"temporary directory: {workdir}")
        setup = make_demo_brokers(workdir, dt.datetime.now(dt.UTC))
        brokers = setup.brokers
        mosquitto = Mosquitto([broker.listener for broker in brokers], workdir / "mosquitto")
        mosquitto.start()
        mosquitto_pid = mosquitto.pid
        _say(f"mosquitto pid: {mosquitto_pid}")
        config_path = workdir / "config.yaml"
        ports = {broker.name: mosquitto.port(broker.name) for broker in brokers}
        config_path.write_text(config_yaml(brokers, ports, setup.ca_file))
        config = load_config(str(config_path))
        _say(f"config: {config_path}")
        _say()
        return eventloop.run(
            _serve(config_path, config, args.listen_address, args.warn_days, mosquitto_pid, workdir)
        )
    except (KeyboardInterrupt, _StopRequested):
        return 0
    except (MosquittoError, ConfigError) as exc:
        print(f"mqtt-cert-exporter demo: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not leave mosquitto or the files behind.
        previous_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if mosquitto is not None:
                mosquitto.stop()
            shutil.rmtree(workdir, ignore_errors=True)
            stopped = f"mosquitto (pid {mosquitto_pid}) stopped, " if mosquitto_pid is not None else ""
            _say(f"demo stopped: {stopped}{workdir} removed")
        finally:
            signal.signal(signal.SIGINT, previous_sigint)
            signal.signal(signal.SIGTERM, previous_sigterm)


def _configure_logging(level: str, fmt: str) -> None:
    """Log at ``level`` to stderr, but let the exporter's "listening" line reach us whatever the level."""
    chosen = logging.WARNING if level == "warn" else getattr(logging, level.upper())
    logs.configure(logging.getLevelName(chosen).lower(), fmt)
    root = logging.getLogger()
    for handler in root.handlers:
        handler.setLevel(chosen)
    logging.getLogger("mqtt_cert_exporter").setLevel(min(chosen, logging.INFO))


class _ListeningUrl(logging.Handler):
    """Catches the URL the exporter logs once it listens (the port is only known then with port 0)."""

    def __init__(self, found: asyncio.Future[str]) -> None:
        super().__init__(logging.INFO)
        self.found = found

    def emit(self, record: logging.LogRecord) -> None:
        url = getattr(record, "url", None)
        if record.msg == "listening" and isinstance(url, str) and not self.found.done():
            self.found.set_result(url)


def _own_command() -> str:
    """How this program was started, so that the command printed works as it is."""
    if Path(sys.argv[0]).name == "mqtt-cert-exporter":
        return sys.argv[0]
    return f"{sys.executable} -m mqtt_cert_exporter"


def _shown_url(url: str) -> str:
    """A URL to click: the wildcard addresses the exporter may listen on are not reachable as such."""
    for wildcard in ("//0.0.0.0:", "//[::]:"):
        url = url.replace(wildcard, "//127.0.0.1:")
    return url


async def _serve(
    config_path: Path,
    config: Config,
    listen_address: str,
    warn_days: float | None,
    mosquitto_pid: int,
    workdir: Path,
) -> int:
    from mqtt_cert_exporter.daemon import Daemon, ServeOptions

    loop = asyncio.get_running_loop()
    found: asyncio.Future[str] = loop.create_future()
    catcher = _ListeningUrl(found)
    logging.getLogger("mqtt_cert_exporter").addHandler(catcher)
    try:
        daemon = Daemon(
            ServeOptions(
                config_file=str(config_path),
                listen_addresses=(listen_address,),
                concurrency=DEFAULT_CONCURRENCY,
            ),
            config,
        )
        serving = asyncio.create_task(daemon.run())
        started: set[asyncio.Future[Any]] = {serving, found}
        await asyncio.wait(started, return_when=asyncio.FIRST_COMPLETED)
    finally:
        logging.getLogger("mqtt_cert_exporter").removeHandler(catcher)
    if serving.done():
        error = serving.exception()
        if error is None:  # stopped (Ctrl-C) before it listened
            return serving.result()
        print(
            f"mqtt-cert-exporter demo: the exporter could not listen on {listen_address}: {error}\n"
            "Another address, or port 0 for any free port: --web.listen-address 127.0.0.1:0",
            file=sys.stderr,
        )
        return 1
    url = _shown_url(found.result())
    status_url = url.removesuffix("metrics")
    _say(f"status page: {status_url}   <- open it in a browser")
    _say()

    checking = asyncio.create_task(probe_all(config.brokers))
    running: set[asyncio.Future[Any]] = {serving, checking}
    await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
    if checking.done():
        now = time.time()
        colour = use_colour("auto", isatty=sys.stdout.isatty(), environ=os.environ)
        reports = [
            build_report(result, broker, warn_days=warn_days, now=now)
            for result, broker in zip(checking.result(), config.brokers, strict=True)
        ]
        for report in reports:
            _say(report.text(colour=colour))
        _say(summary_line(reports, colour=colour))
        _say()
        _say(f"status page: {status_url}")
        _say(f"metrics: {url}")
        _say(f"  see it:      curl -s {url} | grep -E '^mqtt_broker_(probe_success|tls_trust_problem)'")
        _say(f"  check again: {_own_command()} check --config.file {config_path}")
        _say(
            f"Press Ctrl-C to stop: stops the exporter and mosquitto (pid {mosquitto_pid}), removes {workdir}."
        )
    else:
        checking.cancel()
    return await serving
