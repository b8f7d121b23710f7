"""Multi-target mode: ``GET /probe?target=host:port&module=NAME``, the way blackbox_exporter does it.

Every request runs one probe of one target, synchronously, with the settings of one module from the
config's ``modules:`` section, and answers with the metrics of that one result (``exposition.samples_body``):
the same metric names as the scheduled mode, with ``broker`` = the target as probed
(``host:port``). Prometheus decides what is probed and how often, so many stateless replicas can share a
fleet (``hashmod`` sharding, the Prometheus Operator's ``Probe`` resource).

Guarded: ``/probe`` answers 403 until the exporter is started with ``--probe.allowed-target REGEX``
patterns, and then probes only targets that fully match one of them, so the exporter cannot be used to
scan a network. Nothing here keeps state between requests; the prober keeps what it keeps for the
scheduled mode (AIA downloads, parsed certificates, OpenSSL's judgement of a listener's chain).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.collector import broker_samples, configured_samples
from mqtt_cert_exporter.config import BrokerConfig, Config, ModuleConfig, Target, parse_address
from mqtt_cert_exporter.exposition import samples_body
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire.connection import DescriptorsExhausted
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.web import openmetrics
from mqtt_cert_exporter.web.app import compressed, wants_open_metrics

log = logs.get_logger("mqtt_cert_exporter.multitarget")

#: The module used when the request names none, built in when the config does not define it.
DEFAULT_MODULE = "default"
#: Prometheus sends its scrape timeout in this header (seconds, e.g. "10").
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
#: Seconds kept back from the scrape timeout for rendering and the network (blackbox_exporter: 0.5).
TIMEOUT_OFFSET = 0.5
#: Longer ``target`` parameters are refused before any parsing.
MAX_TARGET_LENGTH = 512

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AllowList:
    """Regular expressions a target must fully match (like Prometheus relabel regexes: anchored).

    They are matched against where the probe connects, ``host:port`` or ``[v6]:port`` (the port filled
    in when the request left it out), never against a longer string: a ``wss://`` path cannot make a
    suffix pattern match. The target was validated as a host name or IP literal before. Empty: off.
    """

    def __init__(self, patterns: Iterable[str] = ()) -> None:
        self.patterns = tuple(patterns)
        self._compiled = tuple(compile_pattern(pattern) for pattern in self.patterns)

    @property
    def enabled(self) -> bool:
        return bool(self._compiled)

    def allows(self, target: str) -> bool:
        return any(pattern.fullmatch(target) for pattern in self._compiled)


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile one allow-list pattern; ValueError names the pattern and what is wrong with it."""
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid --probe.allowed-target pattern {pattern!r}: {exc}") from None


def module_named(config: Config, name: str) -> ModuleConfig | None:
    """The configured module; ``default`` exists even when not configured (built-in settings)."""
    module = config.module(name)
    if module is None and name == DEFAULT_MODULE:
        return ModuleConfig()
    return module


def probe_timeout(module_timeout: float, scrape_timeout: str | None) -> float:
    """The probe's deadline: the module's timeout, cut to fit Prometheus's scrape timeout.

    ``scrape_timeout`` is the header's text (None when absent). Prometheus abandons the scrape at its
    timeout, so the probe must finish earlier: ``TIMEOUT_OFFSET`` seconds earlier, or halfway through
    when the scrape timeout is under a second. Raises ValueError when the header is not a positive number.
    """
    if scrape_timeout is None or not scrape_timeout.strip():
        return module_timeout
    try:
        seconds = float(scrape_timeout)
    except ValueError:
        raise ValueError(f"{SCRAPE_TIMEOUT_HEADER}: {scrape_timeout!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{SCRAPE_TIMEOUT_HEADER}: {scrape_timeout!r} is not a positive number of seconds")
    return min(module_timeout, max(seconds - TIMEOUT_OFFSET, seconds / 2))


def broker_for(target: Target, module: ModuleConfig, timeout: float) -> BrokerConfig:
    """What the prober needs: the module's settings aimed at the target; the name is the target."""
    return module.broker_for(target, name=str(target), timeout=timeout)


def result_body(
    result: ProbeResult, broker: BrokerConfig, now: float, *, openmetrics_format: bool = False
) -> bytes:
    """The metrics of one result (and of ``broker``, its settings), encoded, in the text format or
    OpenMetrics. No failure counter (a request cannot count) and no interval (Prometheus's scrape interval
    is the schedule): those families have no samples."""
    samples = configured_samples((broker,))
    samples += broker_samples([(result,)], {}, {}, now, {broker.name: broker})
    if openmetrics_format:
        return samples_body(samples, openmetrics.rewrite_headers, openmetrics.EOF)
    return samples_body(samples)


def debug_text(result: ProbeResult, module_name: str, timeout: float, metrics: bytes) -> str:
    """What ``&debug=true`` shows: the outcome in words, then the metrics."""
    lines = [
        f"target: {result.address}",
        f"module: {module_name}",
        f"timeout: {timeout:.3f}s",
        f"ip: {result.ip or '-'}",
        f"duration: {result.finished - result.started:.3f}s",
    ]
    if result.failure is None:
        lines.append("result: success")
    else:
        lines.append(f"result: failed at {result.failure.stage.value}/{result.failure.reason.value}")
        if result.failure.detail:
            lines.append(f"detail: {result.failure.detail}")
    if result.tls is not None:
        verdict = result.tls.verdict
        lines.append(f"tls: {result.tls.version or '-'} {result.tls.cipher or ''}".rstrip())
        lines.append(f"trusted: {'yes' if verdict.trusted else 'no'}")
        for problem, detail in zip(verdict.problems, verdict.details, strict=False):
            lines.append(f"problem: {problem.value}: {detail}")
        if verdict.verify_message:
            lines.append(f"openssl: {verdict.verify_code} {verdict.verify_message}")
        for position, cert in enumerate(result.tls.chain):
            lines.append(f"certificate {position}: {cert.subject} (issuer {cert.issuer})")
    if result.mqtt is not None:
        lines.append(f"connack: {result.mqtt.connack_code}")
    if result.secondary_failure is not None:
        failure = result.secondary_failure
        lines.append(f"unverified connection: {failure.stage.value}/{failure.reason.value} {failure.detail}")
    lines += ["", "metrics:", metrics.decode()]
    return "\n".join(lines)


class _Refusal(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _refuse(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=message + "\n")


def probe_handler(  # noqa: C901, PLR0915 - debt: target checks, module choice, probe and response in one handler
    config: Callable[[], Config],
    prober: Prober,
    allowed: AllowList | Iterable[str],
    *,
    concurrency: int = 128,
) -> Handler:
    """The aiohttp handler of ``GET /probe``. ``config`` is called per request, so reloads apply."""
    allow_list = allowed if isinstance(allowed, AllowList) else AllowList(allowed)
    slots = asyncio.Semaphore(concurrency) if concurrency > 0 else None
    if allow_list.enabled:
        log.info("multi-target probing enabled", extra={"allowed_targets": " ".join(allow_list.patterns)})

    def prepare(request: web.Request) -> tuple[Target, str, ModuleConfig, float]:
        if not allow_list.enabled:
            raise _Refusal(
                403,
                "multi-target probing is disabled: start the exporter with --probe.allowed-target REGEX "
                "(repeatable) naming the targets /probe may probe",
            )
        text = request.query.get("target", "")
        if not text:
            raise _Refusal(
                400,
                "missing parameter 'target': the broker to probe as host:port, "
                "e.g. /probe?target=mqtt.example.com:8883&module=default",
            )
        if len(text) > MAX_TARGET_LENGTH:
            raise _Refusal(400, f"parameter 'target' is longer than {MAX_TARGET_LENGTH} characters")
        try:
            target = parse_address(text)
        except ValueError as exc:
            # Not echoed: the text may carry credentials (user:password@host), which parse_address refuses.
            raise _Refusal(400, f"invalid parameter 'target': {exc}") from None
        if not allow_list.allows(target.authority):
            raise _Refusal(
                403,
                f"target {target.authority!r} is not allowed: it matches none of the exporter's "
                "--probe.allowed-target patterns",
            )
        name = request.query.get("module", "") or DEFAULT_MODULE
        current = config()
        module = module_named(current, name)
        if module is None:
            known = sorted({DEFAULT_MODULE, *(module_name for module_name, _ in current.modules)})
            raise _Refusal(400, f"unknown module {name!r}; modules: {', '.join(known)}")
        try:
            timeout = probe_timeout(module.timeout, request.headers.get(SCRAPE_TIMEOUT_HEADER))
        except ValueError as exc:
            raise _Refusal(400, str(exc)) from None
        return target, name, module, timeout

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            target, name, module, timeout = prepare(request)
        except _Refusal as refusal:
            return _refuse(refusal.status, refusal.message)
        deadline = time.monotonic() + timeout
        broker = broker_for(target, module, timeout)
        try:
            if slots is None:
                result = await prober.probe(broker)
            else:
                try:
                    async with asyncio.timeout(timeout):
                        await slots.acquire()
                except TimeoutError:
                    return _refuse(503, f"too many probes in flight: no slot free within {timeout:g}s")
                try:
                    left = max(0.0, deadline - time.monotonic())
                    result = await prober.probe(broker_for(target, module, left))
                finally:
                    slots.release()
        except DescriptorsExhausted as exc:  # the exporter's problem: no verdict on the target
            log.error("probe refused", extra={"target": target.authority, "error": str(exc)})
            return _refuse(503, str(exc))
        if log.isEnabledFor(logging.DEBUG):  # the fields cost more than the check, on every request
            log.debug(
                "probed",
                extra={
                    "target": result.address,
                    "module": name,
                    "success": result.success,
                    "failure": f"{result.failure.stage.value}/{result.failure.reason.value}"
                    if result.failure
                    else "",
                },
            )
        if request.query.get("debug", "").lower() in ("1", "true", "yes"):
            return web.Response(
                text=debug_text(result, name, timeout, result_body(result, broker, time.time()))
            )
        wants_openmetrics = wants_open_metrics(request.headers.get("Accept", ""))
        body = result_body(result, broker, time.time(), openmetrics_format=wants_openmetrics)
        content_type = openmetrics.CONTENT_TYPE if wants_openmetrics else CONTENT_TYPE_LATEST
        # a few KiB: compressed in the event loop, not handed to a thread (aiohttp's default above 4 KiB)
        response = web.Response(body=body, headers={"Content-Type": content_type}, zlib_executor_size=1 << 20)
        return compressed(request, response)

    return handle
