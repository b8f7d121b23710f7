"""Command line: `serve` (the default), `check` and `demo`."""

from __future__ import annotations

import argparse
import re
import socket
import sys
from collections.abc import Sequence

from mqtt_cert_exporter import eventloop, logs
from mqtt_cert_exporter.buildinfo import build_info, version_text
from mqtt_cert_exporter.collector import ChainDetail
from mqtt_cert_exporter.config import ConfigError, load_config, parse_duration
from mqtt_cert_exporter.scheduler import DEFAULT_CONCURRENCY
from mqtt_cert_exporter.web.app import parse_listen_address
from mqtt_cert_exporter.web.server import (
    DEFAULT_MAX_CONNECTIONS,
    ListenError,
    default_max_connections,
    systemd_sockets,
)

SUBCOMMANDS = ("serve", "check", "demo", "healthcheck")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _listen_address(text: str) -> str:
    try:
        parse_listen_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _telemetry_path(text: str) -> str:
    reserved = ("/", "/probe", "/-/healthy", "/-/ready", "/-/reload")
    if (
        not text.startswith("/")
        or text in reserved
        or any(c in text for c in "{}?#")
        or not text.isprintable()
    ):
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a path starting with '/', other than {', '.join(reserved)}"
        )
    return text


def _target_pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"invalid regular expression {text!r}: {exc}") from None
    return text


def _shard(text: str) -> tuple[int, int]:
    from mqtt_cert_exporter.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqtt-cert-exporter",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # --version is several lines
        description="Prometheus exporter that probes MQTT brokers over TLS. "
        "Subcommands: serve (default), check, demo, healthcheck.",
    )
    parser.add_argument("--config.file", dest="config_file", default="config.yaml", help="YAML configuration")
    parser.add_argument(
        "--web.listen-address",
        dest="listen_addresses",
        action="append",
        default=[],
        type=_listen_address,
        metavar="[HOST]:PORT",
        help="where to serve the metrics; repeatable (default :9883)",
    )
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="listen on the sockets systemd passes (socket activation) instead of --web.listen-address",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        type=_telemetry_path,
        help="path under which to expose the metrics (default /metrics)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=_positive_int,
        default=None,
        help="open HTTP connections at most; one more closes the longest-idle connection (default "
        f"{DEFAULT_MAX_CONNECTIONS}, or a quarter of the open-file limit when lower)",
    )
    parser.add_argument(
        "--probe.concurrency",
        dest="concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help="probes past their TCP connect at most (TLS, MQTT: the part that costs CPU); connects in progress "
        "are bounded by the open-file limit instead, so black holes do not hold these slots",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default=None,
        help="TLS and basic auth for this endpoint (Prometheus exporter-toolkit format)",
    )
    parser.add_argument(
        "--probe.allowed-target",
        dest="allowed_targets",
        action="append",
        default=[],
        type=_target_pattern,
        metavar="REGEX",
        help="turn on /probe (multi-target mode) for targets fully matching REGEX, matched against "
        "host:port; repeatable. Off when not given",
    )
    parser.add_argument(
        "--shard",
        dest="shard",
        type=_shard,
        default=None,
        metavar="i/n",
        help="probe only the brokers whose name hashes (SHA-256) to shard i of n (0 <= i < n); run n "
        "exporters with 0/n .. n-1/n to cover every broker exactly once",
    )
    parser.add_argument(
        "--probe.legacy-tls-interval",
        dest="legacy_tls_interval",
        type=_duration,
        default=None,
        metavar="DURATION",
        help="also check whether each broker still accepts TLS 1.0/1.1, this often (e.g. 24h). Off when not "
        "given: brokers log the refused handshake, some at warning or error level",
    )
    parser.add_argument(
        "--metrics.chain",
        dest="chain",
        type=ChainDetail,
        choices=list(ChainDetail),
        default=ChainDetail.LEAF_EARLIEST,
        help="which certificates of a chain get the per-certificate series: the leaf and, beyond it, the "
        "earliest-expiring one (and any not yet valid or revoked; the default), or all of them",
    )
    parser.add_argument(
        "--config.check", dest="config_check", action="store_true", help="validate the configuration and exit"
    )
    logs.add_logging_flags(parser)
    parser.add_argument("--version", action="version", version=version_text(build_info()))
    return parser


def serve(argv: Sequence[str]) -> int:
    args = serve_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print(f"{args.config_file}: invalid configuration:\n{exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.config_file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 1
    web_config = None
    if args.web_config_file:
        from mqtt_cert_exporter.web.webconfig import load_web_config

        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as exc:
            print(f"{args.web_config_file}: invalid web configuration:\n{exc}", file=sys.stderr)
            return 1
    if args.config_check:
        print(f"{args.config_file}: OK, {len(config.brokers)} brokers")
        return 0
    from mqtt_cert_exporter.daemon import Daemon, ServeOptions

    addresses: tuple[str, ...] = tuple(args.listen_addresses) or (":9883",)
    sockets: tuple[socket.socket, ...] = ()
    if args.systemd_socket:
        try:
            addresses, sockets = (), tuple(systemd_sockets())
        except ValueError as exc:
            print(exc, file=sys.stderr)
            return 1
    options = ServeOptions(
        args.config_file,
        addresses,
        args.concurrency,
        web_config,
        allowed_targets=tuple(args.allowed_targets),
        shard=args.shard,
        listen_sockets=sockets,
        telemetry_path=args.telemetry_path,
        max_connections=args.max_connections or default_max_connections(),
        legacy_tls_interval=args.legacy_tls_interval or None,
        chain=args.chain,
    )
    try:
        return eventloop.run(Daemon(options, config).run())
    except ListenError as exc:
        print(f"--web.listen-address: {exc.strerror}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments and arguments[0] in SUBCOMMANDS else "serve"
    if arguments and arguments[0] == command:
        arguments = arguments[1:]
    if command == "check":
        from mqtt_cert_exporter.check import main as check_main

        return check_main(arguments)
    if command == "healthcheck":
        from mqtt_cert_exporter.healthcheck import main as healthcheck_main

        return healthcheck_main(arguments)
    if command == "demo":
        from mqtt_cert_exporter.demo import main as demo_main

        return demo_main(arguments)
    return serve(arguments)
