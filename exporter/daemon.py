"""The `serve` mode: configuration lifecycle, scheduler, HTTP server and signals, in one asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from exporter import eventloop, memory, shard
from exporter.collector import ExporterCollector, ExporterFacts
from exporter.config import BrokerConfig, Config, ConfigError, load_config
from exporter.exposition import BrokerExposition
from exporter.multitarget import probe_handler
from exporter.probe import Prober
from exporter.results import ProbeResult
from exporter.scheduler import Scheduler
from exporter.store import ResultStore
from exporter.web import WebState, build_app, parse_listen_address
from exporter.webconfig import WebConfig

log = logging.getLogger("exporter")


@dataclass(frozen=True)
class ServeOptions:
    config_file: str
    listen_address: str = ":9883"
    concurrency: int = 128
    web_config: WebConfig | None = None
    #: --probe.allowed-target patterns; empty: /probe (multi-target mode) is off
    allowed_targets: tuple[str, ...] = ()
    #: --shard=i/n: probe only the brokers whose name hashes to shard i of n (exporter.shard)
    shard: tuple[int, int] | None = None
    #: --probe.legacy-tls-interval: how often the TLS 1.0/1.1 check runs per broker; None: never
    legacy_tls_interval: float | None = None


def state_of(result: ProbeResult) -> tuple[str, ...]:
    """What counts as a change of a broker's state (logged once, not every probe)."""
    if result.failure is None:
        return ("ok",)
    problems = result.tls.verdict.problems if result.tls else ()
    return (result.failure.stage.value, result.failure.reason.value, *problems)


def log_state_change(result: ProbeResult, previous: ProbeResult | None) -> None:
    if previous is not None and state_of(previous) == state_of(result):
        return
    where: dict[str, object] = {"broker": result.broker, "address": result.address}
    if result.address_label:  # addresses: all: which address of the name
        where["ip"] = result.address_label
    if result.failure is None:
        log.info("broker probe succeeds", extra=where)
        return
    fields: dict[str, object] = {
        **where,
        "stage": result.failure.stage.value,
        "reason": result.failure.reason.value,
        "detail": result.failure.detail,
    }
    if result.tls and result.tls.verdict.problems:
        fields["problems"] = ",".join(result.tls.verdict.problems)
        fields["why"] = "; ".join(result.tls.verdict.details)
    log.warning("broker probe fails", extra=fields)


class Daemon:
    def __init__(self, options: ServeOptions, config: Config) -> None:
        self.options = options
        self.config = config
        self.store = ResultStore()
        self.prober = Prober(legacy_tls_interval=options.legacy_tls_interval)
        self.scheduler: Scheduler | None = None
        self.web_state = WebState()
        self.reload_ok = True
        self.reload_time = time.time()
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(ExporterCollector(self.store, self._facts, brokers=False))
        self.exposition = BrokerExposition(self.store)
        self._stopping = asyncio.Event()
        #: the bound /metrics URLs, set before `listening` is
        self.urls: list[str] = []
        self.listening = asyncio.Event()
        self._selected: tuple[Config | None, tuple[BrokerConfig, ...]] = (None, ())

    @property
    def brokers(self) -> tuple[BrokerConfig, ...]:
        """The configured brokers this process probes (all of them, or its --shard's)."""
        config, selected = self._selected
        if config is not self.config:  # hashed once per configuration, not at every scrape
            selected = shard.select(self.config.brokers, self.options.shard)
            self._selected = (self.config, selected)
        return selected

    def _on_result(self, result: ProbeResult, previous: ProbeResult | None) -> None:
        log_state_change(result, previous)
        self.exposition.prepare(result.broker)

    def _facts(self) -> ExporterFacts:
        return ExporterFacts(
            brokers=len(self.brokers),
            last_reload_successful=self.reload_ok,
            last_reload_success_timestamp=self.reload_time,
            probes_in_flight=self.scheduler.probes_in_flight if self.scheduler else 0,
            tasks=len(asyncio.all_tasks()),
            max_schedule_lag=self.scheduler.max_lag if self.scheduler else 0.0,
            metrics_render_seconds=self.web_state.metrics_render_seconds,
        )

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; a config that fails validation is rejected whole."""
        try:
            config = load_config(self.options.config_file)
        except ConfigError as exc:
            self.reload_ok = False
            log.error(
                "configuration rejected, keeping the previous one",
                extra={"file": self.options.config_file, "errors": "; ".join(exc.errors)},
            )
            return False, "configuration rejected:\n" + str(exc)
        except OSError as exc:
            self.reload_ok = False
            log.error(
                "cannot read configuration", extra={"file": self.options.config_file, "error": str(exc)}
            )
            return False, f"cannot read configuration: {exc}"
        if config == self.config:
            self.reload_ok = True
            return True, "configuration unchanged"
        self.config = config
        self.reload_ok, self.reload_time = True, time.time()
        assert self.scheduler is not None
        added, removed, changed = self.scheduler.apply(self.brokers)
        log.info(
            "configuration reloaded",
            extra={"brokers": len(self.brokers), "added": added, "removed": removed, "changed": changed},
        )
        return True, f"configuration reloaded: {added} added, {removed} removed, {changed} changed"

    def stop(self) -> None:
        """Ask run() to shut down (what SIGTERM does)."""
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.scheduler = Scheduler(
            self.prober, self.store, concurrency=self.options.concurrency, on_result=self._on_result
        )
        web_config = self.options.web_config or WebConfig()
        probe = probe_handler(
            lambda: self.config,
            self.prober,
            self.options.allowed_targets,
            concurrency=self.options.concurrency,
        )
        app = build_app(
            self.registry,
            self.web_state,
            reload=self.reload,
            middlewares=[web_config.middleware()],
            broker_text=self.exposition.render,
            probe=probe,
        )
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await runner.setup()
        host, port = parse_listen_address(self.options.listen_address)
        site = web.TCPSite(
            runner, host=host, port=port, reuse_address=True, ssl_context=web_config.ssl_context
        )
        scheme = "https" if web_config.ssl_context else "http"
        await site.start()
        server = site._server
        for sock in getattr(server, "sockets", None) or ():
            address = sock.getsockname()
            shown = f"[{address[0]}]" if ":" in address[0] else address[0]
            url = f"{scheme}://{shown}:{address[1]}/metrics"
            self.urls.append(url)
            log.info("listening", extra={"url": url})
        self.listening.set()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self.reload()))
        memory.tune_garbage_collector()
        self.scheduler.apply(self.brokers)
        self.web_state.ready = True
        started: dict[str, object] = {
            "brokers": len(self.brokers),
            "config": self.options.config_file,
            "event_loop": eventloop.running_name(),
        }
        if self.options.shard is not None:
            started["shard"] = "{}/{}".format(*self.options.shard)
            started["configured"] = len(self.config.brokers)
        log.info("started", extra=started)
        trimming = asyncio.create_task(memory.trim_periodically(), name="memory:trim")
        await self._stopping.wait()
        log.info("shutting down")
        trimming.cancel()
        await self.scheduler.stop()
        await runner.cleanup()
        return 0
