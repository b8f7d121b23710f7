"""Command line: `serve` (the default), `check` and `demo`."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from exporter import __version__, eventloop, logs
from exporter.config import ConfigError, load_config, parse_duration
from exporter.scheduler import DEFAULT_CONCURRENCY

SUBCOMMANDS = ("serve", "check", "demo")


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


def _target_pattern(text: str) -> str:
    try:
        re.compile(text)
    except re.error as exc:
        raise argparse.ArgumentTypeError(f"invalid regular expression {text!r}: {exc}") from None
    return text


def _shard(text: str) -> tuple[int, int]:
    from exporter.shard import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqtt-cert-exporter",
        description="Prometheus exporter that probes MQTT brokers over TLS. "
        "Subcommands: serve (default), check, demo.",
    )
    parser.add_argument("--config.file", dest="config_file", default="config.yaml", help="YAML configuration")
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=":9883",
        help="[host]:port to serve /metrics on",
    )
    parser.add_argument(
        "--probe.concurrency",
        dest="concurrency",
        type=_positive_int,
        default=DEFAULT_CONCURRENCY,
        help="probes in flight at most (a black-holed broker holds a slot for its whole timeout)",
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
        "--config.check", dest="config_check", action="store_true", help="validate the configuration and exit"
    )
    add_logging_flags(parser)
    parser.add_argument("--version", action="version", version=f"mqtt-cert-exporter {__version__}")
    return parser


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])


def serve(argv: Sequence[str]) -> int:
    args = serve_parser().parse_args(argv)
    logs.configure("warning" if args.log_level == "warn" else args.log_level, args.log_format)
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
        from exporter.webconfig import load_web_config

        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as exc:
            print(f"{args.web_config_file}: invalid web configuration:\n{exc}", file=sys.stderr)
            return 1
    if args.config_check:
        print(f"{args.config_file}: OK, {len(config.brokers)} brokers")
        return 0
    from exporter.daemon import Daemon, ServeOptions

    options = ServeOptions(
        args.config_file,
        args.listen_address,
        args.concurrency,
        web_config,
        allowed_targets=tuple(args.allowed_targets),
        shard=args.shard,
        legacy_tls_interval=args.legacy_tls_interval or None,
    )
    return eventloop.run(Daemon(options, config).run())


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = arguments[0] if arguments and arguments[0] in SUBCOMMANDS else "serve"
    if arguments and arguments[0] == command:
        arguments = arguments[1:]
    if command == "check":
        from exporter.check import main as check_main

        return check_main(arguments)
    if command == "demo":
        from exporter.demo import main as demo_main

        return demo_main(arguments)
    return serve(arguments)
