"""Structured logs: logfmt (default) or JSON, one line per event. Extra fields go in ``extra={...}``.

Get loggers with ``get_logger``: its ``extra`` may use any key, even one the stdlib reserves for
LogRecord attributes (``module``, ``name``, ``msg``...), which would otherwise raise inside the log call
(issue 18.4). Every value is escaped: a certificate's control characters, bidi overrides or newlines
never reach a terminal or split a line, and a value is cut at ``MAX_VALUE_CHARS`` (issue 18.11).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any

from mqtt_cert_exporter.printable import cut, escape_controls

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
#: The record attribute that carries the extra fields whose names LogRecord reserves.
_RESERVED_FIELDS = "_reserved_fields"
#: The fields every line starts with; an extra field of the same name is written with a trailing "_".
_LEADING = ("ts", "level", "logger", "msg")
#: Longer values are cut (a certificate chose one of 53,727 characters).
MAX_VALUE_CHARS = 4096
#: go-kit's level names (what Prometheus exporters print and --log.level takes).
_LEVEL_NAMES = {"WARNING": "warn", "CRITICAL": "error"}


class FieldLogger(logging.LoggerAdapter[logging.Logger]):
    """A logger whose ``extra`` keys cannot collide with LogRecord's own attributes."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra: Mapping[str, object] | None = kwargs.get("extra")
        if extra and not _STANDARD.isdisjoint(extra):
            safe = {key: value for key, value in extra.items() if key not in _STANDARD}
            safe[_RESERVED_FIELDS] = {key: value for key, value in extra.items() if key in _STANDARD}
            kwargs["extra"] = safe
        return msg, kwargs


def get_logger(name: str) -> FieldLogger:
    return FieldLogger(logging.getLogger(name))


def _fields(record: logging.LogRecord) -> dict[str, object]:
    fields: dict[str, object] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": _LEVEL_NAMES.get(record.levelname, record.levelname.lower()),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    extra = {key: value for key, value in vars(record).items() if key not in _STANDARD and key[:1] != "_"}
    extra.update(getattr(record, _RESERVED_FIELDS, {}))
    for key, value in extra.items():
        fields[f"{key}_" if key in _LEADING else key] = value
    if record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info)
    return fields


def _cut(value: object) -> str:
    return cut(str(value), MAX_VALUE_CHARS)


def _logfmt_value(value: object) -> str:
    text = _cut(value)
    if text and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    quoted = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escape_controls(quoted) + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        # json.dumps escapes every control and non-ASCII character (ensure_ascii); only length is ours.
        fields = {
            key: value if isinstance(value, bool | int | float) or value is None else _cut(value)
            for key, value in _fields(record).items()
        }
        return json.dumps(fields)


def add_logging_flags(parser: argparse.ArgumentParser) -> None:
    """The flags every subcommand that logs takes; ``configure`` gets their values."""
    parser.add_argument(
        "--log.level", dest="log_level", default="info", choices=["debug", "info", "warn", "error"]
    )
    parser.add_argument("--log.format", dest="log_format", default="logfmt", choices=["logfmt", "json"])


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    """``level``: debug, info, warn (or warning), error."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel("WARNING" if level.lower() == "warn" else level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
