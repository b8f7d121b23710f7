"""`mqtt-cert-exporter check`: probe brokers once and explain what is wrong and how to fix it.

Usage::

    mqtt-cert-exporter check HOST:PORT [--ca-file F] [--server-name N] [--cert-file F [--key-file F]]
        [--intermediates-file F] [--username U --password-file F] [--protocol auto|5|3.1.1] [--client-id ID]
        [--broker-kind mosquitto|rabbitmq|emqx|hivemq|ejabberd]
        [--timeout 10s] [--output text|json] [--warn-days 30] [--color auto|always|never] [--legacy-tls]
    mqtt-cert-exporter check --config.file config.yaml [--broker NAME ...] [--output text|json]
        [--warn-days 30] [--probe.concurrency N]

With ``--config.file`` every configured broker is probed (concurrently), or only those named with
``--broker`` (repeatable); reports come in the order of the configuration. Connection flags (``--ca-file``
...) belong to the address form only: with a config file, the config says how to reach each broker.

Output:

* ``text`` (default): one report per broker (``exporter.report.text``); with several brokers a final line
  counts them by status. Colour when stdout is a terminal and ``NO_COLOR`` is not set (``--color``
  overrides).
* ``json``: for an address, one JSON object (the document described in docs/check.md); for
  ``--config.file``, always a JSON array of such objects (also when ``--broker`` selects one), in
  configuration order. Nothing else is written to stdout.

Exit code (a Nagios/Icinga plugin's): the worst over all brokers checked, 0 ok, 1 warning (a certificate,
the trust anchor or our own client certificate expires within ``--warn-days``, or the broker serves an
outdated certificate), 2 critical (unreachable, not TLS, untrusted, expired, revoked, refused...),
3 unknown (bad arguments, unreadable or invalid configuration, unknown ``--broker``); messages about
those go to stderr.

Passwords are read from a file (``--password-file``) so they never show in the process list, and are
never printed.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import logging
import os
import re
import select
import ssl
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NoReturn, TextIO

from mqtt_cert_exporter import eventloop
from mqtt_cert_exporter.certs import files
from mqtt_cert_exporter.config import (
    BrokerConfig,
    ConfigError,
    MqttSettings,
    Secret,
    TlsSettings,
    load_config,
    parse_address,
    parse_duration,
    read_password_file,
)
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.report import DEFAULT_WARN_DAYS, Report, Status, build_report, summary_line, worst
from mqtt_cert_exporter.report.brokerkinds import BrokerKind
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.scheduler import DEFAULT_CONCURRENCY

DEFAULT_TIMEOUT = "10s"
#: Flags that say how to reach one address; a config file says that per broker.
ADDRESS_FLAGS = (
    ("ca_file", "--ca-file"),
    ("server_name", "--server-name"),
    ("cert_file", "--cert-file"),
    ("key_file", "--key-file"),
    ("intermediates_file", "--intermediates-file"),
    ("username", "--username"),
    ("password_file", "--password-file"),
    ("protocol", "--protocol"),
    ("client_id", "--client-id"),
    ("timeout", "--timeout"),
    ("broker_kind", "--broker-kind"),
)


class UsageError(Exception):
    """Bad arguments or configuration: exit 3 ("unknown"), never 2 (which means "critical")."""

    def __init__(self, message: str, *, show_usage: bool = False) -> None:
        super().__init__(message)
        self.show_usage = show_usage


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, show_usage=True)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mqtt-cert-exporter check",
        description="Probe MQTT brokers over TLS once; explain every problem and its fix. "
        "Exit code: 0 ok, 1 warning, 2 critical, 3 unknown.",
    )
    parser.add_argument(
        "address", nargs="?", help="broker to check: HOST:PORT, [IPv6]:PORT or mqtts://HOST:PORT"
    )
    parser.add_argument(
        "--config.file", dest="config_file", metavar="FILE", help="check the brokers of this configuration"
    )
    parser.add_argument(
        "--broker",
        dest="brokers",
        action="append",
        metavar="NAME",
        help="with --config.file: only this broker",
    )
    tls = parser.add_argument_group("TLS (with an address)")
    tls.add_argument(
        "--ca-file", metavar="FILE", help="CA certificates to trust (default: the system trust store)"
    )
    tls.add_argument(
        "--server-name",
        metavar="NAME",
        help="name to send (SNI) and verify (default: the host of the address)",
    )
    tls.add_argument(
        "--cert-file", metavar="FILE", help="client certificate (mTLS), PEM; may also hold the key"
    )
    tls.add_argument("--key-file", metavar="FILE", help="key of the client certificate, PEM")
    tls.add_argument(
        "--intermediates-file", metavar="FILE", help="intermediate certificates that may complete the chain"
    )
    mqtt = parser.add_argument_group("MQTT (with an address)")
    mqtt.add_argument("--username", metavar="USER", help="MQTT user name")
    mqtt.add_argument(
        "--password-file",
        metavar="FILE",
        help="file holding the MQTT password (one trailing newline is ignored)",
    )
    mqtt.add_argument(
        "--protocol",
        choices=["auto", "5", "3.1.1"],
        help="MQTT version (default: auto, learned with a CONNECT that carries no credentials)",
    )
    mqtt.add_argument("--client-id", metavar="ID", help="MQTT client id (default: generated)")
    parser.add_argument(
        "--broker-kind",
        choices=[kind.value for kind in BrokerKind],
        help="the broker's implementation, so the fixes name its settings (default: every kind's, labelled)",
    )
    parser.add_argument(
        "--timeout",
        metavar="DURATION",
        help=f"deadline of the whole probe, e.g. 5s (default: {DEFAULT_TIMEOUT})",
    )
    parser.add_argument("--output", choices=["text", "json"], default="text", help="report format")
    parser.add_argument(
        "--legacy-tls",
        action="store_true",
        help="also check whether the broker still accepts TLS 1.0/1.1 (one more handshake, which brokers "
        "log as refused, some at warning or error level)",
    )
    parser.add_argument(
        "--warn-days",
        type=_warn_days,
        metavar="DAYS",
        default=None,
        help="warn (exit 1) when a certificate expires within this many days (default: each broker's "
        f"expiry_warning, as the alert rules use it: {DEFAULT_WARN_DAYS:g} days unless configured)",
    )
    parser.add_argument(
        "--color",
        "--colour",
        dest="color",
        choices=["auto", "always", "never"],
        default="auto",
        help="colour the text report (auto: when stdout is a terminal and NO_COLOR is unset)",
    )
    parser.add_argument(
        "--probe.concurrency",
        dest="concurrency",
        metavar="N",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help="with --config.file: probes in flight at most",
    )
    return parser


def _warn_days(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of days, got {text!r}") from None
    if not 0 <= value < 100_000:
        raise argparse.ArgumentTypeError("must be 0 or more days")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def use_colour(choice: str, *, isatty: bool, environ: Mapping[str, str]) -> bool:
    """``auto``: colour only on a terminal, and never when NO_COLOR is set (https://no-color.org)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return isatty and not environ.get("NO_COLOR")


# --------------------------------------------------------------------------------------------------
# From arguments to brokers


def _readable_file(flag: str, path: str) -> str:
    full = os.path.abspath(path)
    if not os.path.isfile(full):
        raise UsageError(f"{flag} {path}: no such file")
    try:
        with open(full, "rb"):
            pass
    except OSError as exc:
        raise UsageError(f"{flag} {path}: {exc.strerror or 'cannot be read'}") from None
    return full


def _read_password(path: str) -> Secret:
    try:
        return read_password_file(_readable_file("--password-file", path), shown=path)
    except ValueError as exc:
        raise UsageError(f"--password-file {exc}") from None


def broker_from_arguments(args: argparse.Namespace) -> BrokerConfig:
    try:
        target = parse_address(args.address)
    except ValueError as exc:
        raise UsageError(f"address {args.address!r}: {exc}") from None
    try:
        timeout = parse_duration(args.timeout or DEFAULT_TIMEOUT)
    except ValueError as exc:
        raise UsageError(f"--timeout: {exc}") from None
    if timeout <= 0:
        raise UsageError("--timeout: must be greater than 0")
    if args.key_file and not args.cert_file:
        raise UsageError("--key-file requires --cert-file")
    if args.password_file and not args.username:
        raise UsageError("--password-file requires --username")

    def readable(flag: str, path: str | None) -> str | None:
        return _readable_file(flag, path) if path else None

    tls = TlsSettings(
        ca_file=readable("--ca-file", args.ca_file),
        server_name=args.server_name or None,
        cert_file=readable("--cert-file", args.cert_file),
        key_file=readable("--key-file", args.key_file),
        intermediates_file=readable("--intermediates-file", args.intermediates_file),
    )
    mqtt = MqttSettings(
        protocol=args.protocol or "auto",
        client_id=args.client_id or None,
        username=args.username or None,
        password=_read_password(args.password_file) if args.password_file else None,
    )
    return BrokerConfig(
        name=args.address,
        target=target,
        timeout=timeout,
        tls=tls,
        mqtt=mqtt,
        broker_kind=args.broker_kind or "",
    )


def brokers_from_config(path: str, names: Sequence[str] | None) -> list[BrokerConfig]:
    try:
        config = load_config(path)
    except ConfigError as exc:
        errors = "\n".join(f"  {error}" for error in exc.errors)
        raise UsageError(f"cannot use --config.file {path}:\n{errors}") from None
    if not names:
        if not config.brokers:
            raise UsageError(f"{path}: no brokers configured")
        return list(config.brokers)
    unknown = [name for name in names if config.broker(name) is None]
    if unknown:
        known = ", ".join(broker.name for broker in config.brokers) or "none"
        raise UsageError(f"{path}: no broker named {', '.join(map(repr, unknown))} (configured: {known})")
    selected = dict.fromkeys(names)  # keeps order, drops repeats
    return [broker for broker in config.brokers if broker.name in selected]


def check_tls_files(broker: BrokerConfig, *, flags: Mapping[str, str]) -> None:
    """Load the TLS files as the probe will, so that a bad file is a usage error, not a failed probe.

    ``flags`` names each setting for messages (``--ca-file``, or the broker's ``tls.ca_file``).
    """
    settings = broker.tls
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.ca_file:
        try:
            context.load_verify_locations(cafile=settings.ca_file)
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{flags['ca_file']} {settings.ca_file}: no usable CA certificate ({_why(exc)})"
            ) from None
    if settings.cert_file:
        try:
            # An encrypted key would make OpenSSL prompt on the terminal: a check must fail instead.
            context.load_cert_chain(settings.cert_file, settings.key_file, password=lambda: b"")
        except (OSError, ValueError) as exc:
            raise UsageError(
                f"{flags['cert_file']} {settings.cert_file}: cannot load the client certificate and key "
                f"({_why(exc)}); both must be PEM, the key unencrypted and matching the certificate"
            ) from None
    if settings.intermediates_file and not files.certificates_in(settings.intermediates_file):
        raise UsageError(f"{flags['intermediates_file']} {settings.intermediates_file}: no certificate found")


_OPENSSL_NOISE = re.compile(r"^\[[^]]*\]\s*|\s*\(_ssl\.c:\d+\)$")


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return _OPENSSL_NOISE.sub("", exc.strerror)
    return str(exc)


_ADDRESS_FLAG_NAMES = {
    "ca_file": "--ca-file",
    "cert_file": "--cert-file",
    "intermediates_file": "--intermediates-file",
}


def select_brokers(args: argparse.Namespace) -> list[BrokerConfig]:
    if args.config_file is not None and args.address is not None:
        raise UsageError("give either an address or --config.file, not both")
    if args.config_file is None:
        if args.address is None:
            raise UsageError("nothing to check: give an address (HOST:PORT) or --config.file")
        if args.brokers:
            raise UsageError("--broker needs --config.file")
        broker = broker_from_arguments(args)
        check_tls_files(broker, flags=_ADDRESS_FLAG_NAMES)
        return [broker]
    given = [flag for name, flag in ADDRESS_FLAGS if getattr(args, name) is not None]
    if given:
        raise UsageError(
            f"{', '.join(given)}: only with an address; with --config.file set them in the config"
        )
    brokers = brokers_from_config(args.config_file, args.brokers)
    for broker in brokers:
        prefix = f"{args.config_file}: broker {broker.name}: tls."
        check_tls_files(broker, flags={name: prefix + name for name in _ADDRESS_FLAG_NAMES})
    return brokers


# --------------------------------------------------------------------------------------------------
# Probing and output


async def probe_all(
    brokers: Sequence[BrokerConfig], *, concurrency: int = DEFAULT_CONCURRENCY, legacy_tls: bool = False
) -> list[ProbeResult]:
    """Probe every broker once, concurrently (at most ``concurrency`` at a time); results in input order.
    ``legacy_tls``: also check whether each still accepts TLS 1.0/1.1 (one more handshake each)."""
    prober = Prober(legacy_tls_interval=0.0 if legacy_tls else None)
    slots = asyncio.Semaphore(concurrency)

    async def probe(broker: BrokerConfig) -> ProbeResult:
        async with slots:
            return await prober.probe(broker)

    return list(await asyncio.gather(*(probe(broker) for broker in brokers)))


@dataclass(frozen=True)
class Outcome:
    reports: list[Report]

    @property
    def status(self) -> Status:
        return worst(report.status for report in self.reports)


def run_checks(
    brokers: Sequence[BrokerConfig],
    *,
    warn_days: float | None,
    concurrency: int = DEFAULT_CONCURRENCY,
    legacy_tls: bool = False,
) -> Outcome:
    results = eventloop.run(probe_all(brokers, concurrency=concurrency, legacy_tls=legacy_tls))
    now = time.time()
    return Outcome(
        [build_report(r, b, warn_days=warn_days, now=now) for r, b in zip(results, brokers, strict=True)]
    )


def render(outcome: Outcome, *, output: str, several: bool, colour: bool) -> str:
    """The whole stdout of a check."""
    if output == "json":
        documents = [report.document() for report in outcome.reports]
        return json.dumps(documents if several else documents[0], indent=2) + "\n"
    text = "\n".join(report.text(colour=colour) for report in outcome.reports)
    if len(outcome.reports) > 1:
        text += "\n" + summary_line(outcome.reports, colour=colour) + "\n"
    return text


def main(argv: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    # The report says everything the probe's log lines would; keep them off stderr.
    logging.getLogger("mqtt_cert_exporter").addHandler(logging.NullHandler())
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv))
        brokers = select_brokers(args)
    except UsageError as exc:
        if exc.show_usage:
            print(parser.format_usage().rstrip(), file=err)
        print(f"{parser.prog}: error: {exc}", file=err)
        return int(Status.UNKNOWN)
    except SystemExit as exc:  # --help
        return exc.code if isinstance(exc.code, int) else 0
    try:
        outcome = run_checks(
            brokers, warn_days=args.warn_days, concurrency=args.concurrency, legacy_tls=args.legacy_tls
        )
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug must read "unknown" to a monitoring system, not "warning" (exit 1)
        print(f"{parser.prog}: internal error: {type(exc).__name__}: {exc}", file=err)
        return int(Status.UNKNOWN)
    colour = use_colour(args.color, isatty=out.isatty(), environ=os.environ)
    write_all(out, render(outcome, output=args.output, several=args.config_file is not None, colour=colour))
    return int(outcome.status)


def write_all(out: TextIO, text: str) -> None:
    """All of ``text``, also to a pipe whose reader is slow: after a run on uvloop, a large write through
    ``sys.stdout`` to a full pipe came back short (65,536 bytes of a 200,000-byte report reached the
    reader, no error raised). ``os.write`` reports each partial write; the loop sends the rest."""
    try:
        descriptor = out.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):  # a StringIO (tests, embedding)
        out.write(text)
        out.flush()
        return
    out.flush()
    data = memoryview(text.encode(getattr(out, "encoding", None) or "utf-8"))
    while data:
        try:
            written = os.write(descriptor, data)
        except BlockingIOError:
            select.select([], [descriptor], [])
            continue
        data = data[written:]
