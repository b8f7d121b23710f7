"""The `serve` mode: configuration lifecycle, scheduler, HTTP server and signals, in one asyncio loop."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

from mqtt_cert_exporter import admission, configfile, eventloop, logs, memory, shard
from mqtt_cert_exporter.coalesce import Coalesced, in_daemon_thread
from mqtt_cert_exporter.collector import ChainDetail, ExporterCollector, ExporterFacts
from mqtt_cert_exporter.config import BrokerConfig, Config, ConfigError, load_config
from mqtt_cert_exporter.exposition import BrokerExposition
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire.connection import FD_EXHAUSTION
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.scheduler import Scheduler
from mqtt_cert_exporter.store import ResultStore
from mqtt_cert_exporter.web import server as webserver
from mqtt_cert_exporter.web.app import WebState, build_app
from mqtt_cert_exporter.web.multitarget import probe_handler
from mqtt_cert_exporter.web.status.routes import StatusSource, latest_results, status_routes
from mqtt_cert_exporter.web.webconfig import WebConfig

log = logs.get_logger("mqtt_cert_exporter")


@dataclass(frozen=True)
class ServeOptions:
    config_file: str
    #: --web.listen-address, repeatable; ignored with systemd_socket
    listen_addresses: tuple[str, ...] = (":9883",)
    concurrency: int = 128
    web_config: WebConfig | None = None
    #: --probe.allowed-target patterns; empty: /probe (multi-target mode) is off
    allowed_targets: tuple[str, ...] = ()
    #: --shard=i/n: probe only the brokers whose name hashes to shard i of n (exporter.shard)
    shard: tuple[int, int] | None = None
    #: listening sockets to serve on besides listen_addresses (--web.systemd-socket: systemd's)
    listen_sockets: tuple[socket.socket, ...] = ()
    #: --web.telemetry-path
    telemetry_path: str = "/metrics"
    #: --web.max-connections
    max_connections: int = webserver.DEFAULT_MAX_CONNECTIONS
    #: --probe.legacy-tls-interval: how often the TLS 1.0/1.1 check runs per broker; None: never
    legacy_tls_interval: float | None = None
    #: --metrics.chain: which certificates of each chain have series in /metrics
    chain: ChainDetail = ChainDetail.LEAF_EARLIEST


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
        self.exposition = BrokerExposition(self.store, chain=options.chain)
        self.connections = webserver.ConnectionGuard(self.options.max_connections)
        self._stopping = asyncio.Event()
        #: the bound /metrics URLs, set before `listening` is
        self.urls: list[str] = []
        self.listening = asyncio.Event()
        self._selected: tuple[Config | None, tuple[BrokerConfig, ...]] = (None, ())
        #: SIGHUP: at most one reload running and one queued, however many signals arrive
        self.sighup = Coalesced(self.reload)
        self._reloading = asyncio.Lock()

    @property
    def connect_limit(self) -> int:
        """TCP connects in progress at most: what the open-file limit leaves after the slots, the HTTP
        connections and /probe's probes (each may hold two connections)."""
        probe_mode = (
            admission.DESCRIPTORS_PER_SLOT * self.options.concurrency if self.options.allowed_targets else 0
        )
        return admission.connect_limit(self.options.concurrency, self.options.max_connections + probe_mode)

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
            probes_connecting=self.scheduler.budgets.connecting if self.scheduler else 0,
            tasks=len(asyncio.all_tasks()),
            max_schedule_lag=self.scheduler.max_lag if self.scheduler else 0.0,
            metrics_render_seconds=self.web_state.metrics_render_seconds,
            caches=self.prober.cache_sizes(),
            fd_exhaustion=FD_EXHAUSTION.count,
            http_connections=self.connections.open_connections,
            http_evicted=self.connections.evicted,
            http_header_timeouts=self.connections.timed_out,
        )

    async def reload(self) -> tuple[bool, str]:
        """Re-read the config file; a config that fails validation is rejected whole.

        One reload at a time; the file is parsed in a daemon thread, so scrapes go on meanwhile and a
        SIGTERM does not wait for a slow parse."""
        async with self._reloading:
            return await self._reload()

    async def _reload(self) -> tuple[bool, str]:
        replaced = configfile.replaced_since_mounted(self.options.config_file)
        if replaced is not None:
            self.reload_ok = False
            log.error(
                "configuration not reloaded", extra={"file": self.options.config_file, "error": replaced}
            )
            return False, f"configuration not reloaded: {replaced}"
        try:
            config = await in_daemon_thread(lambda: load_config(self.options.config_file))
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
        added, removed, changed = self._apply_configuration()
        log.info(
            "configuration reloaded",
            extra={"brokers": len(self.brokers), "added": added, "removed": removed, "changed": changed},
        )
        return True, f"configuration reloaded: {added} added, {removed} removed, {changed} changed"

    def _apply_configuration(self) -> tuple[int, int, int]:
        """The brokers of ``self.config`` to the scheduler, and what they say alone to the exposition (not
        left to the first scrape); (added, removed, changed)."""
        assert self.scheduler is not None
        applied = self.scheduler.apply(self.brokers)
        self.exposition.prepare_configuration()
        return applied

    def stop(self) -> None:
        """Ask run() to shut down (what SIGTERM does)."""
        self._stopping.set()

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self.scheduler = Scheduler(
            self.prober,
            self.store,
            concurrency=self.options.concurrency,
            connects=self.connect_limit,
            on_result=self._on_result,
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
            middlewares=[self.connections.middleware, web_config.middleware()],
            broker_body=self.exposition.body,
            probe=probe,
            telemetry_path=self.options.telemetry_path,
            pages=status_routes(
                StatusSource(
                    brokers=lambda: self.brokers,
                    results=lambda: latest_results(self.store),
                    modules=lambda: [name for name, _ in self.config.modules],
                    probe_patterns=self.options.allowed_targets,
                )
            ),
        )
        webserver.quiet_bad_requests()
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=1.0,
            keepalive_timeout=webserver.IDLE_TIMEOUT,
        )
        await runner.setup()
        assert runner.server is not None
        try:
            listeners = await webserver.listen(
                self.connections.protocol_factory(runner.server),
                addresses=self.options.listen_addresses,
                sockets=self.options.listen_sockets,
                ssl_context=web_config.ssl_context,
                path=self.options.telemetry_path,
            )
        except BaseException:
            await runner.cleanup()
            raise
        for url in listeners.urls:
            self.urls.append(url)
            log.info("listening", extra={"url": url})
        self.listening.set()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopping.set)
        loop.add_signal_handler(signal.SIGHUP, self.sighup.request)
        memory.tune_garbage_collector()
        self._apply_configuration()
        self.web_state.ready = True
        started: dict[str, object] = {
            "brokers": len(self.brokers),
            "config": self.options.config_file,
            "event_loop": eventloop.running_name(),
            "probe_concurrency": self.options.concurrency,
            "connect_limit": self.connect_limit,
        }
        if self.options.shard is not None:
            started["shard"] = "{}/{}".format(*self.options.shard)
            started["configured"] = len(self.config.brokers)
        log.info("started", extra=started)
        trimming = asyncio.create_task(memory.trim_periodically(), name="memory:trim")
        await self._stopping.wait()
        log.info("shutting down")
        trimming.cancel()
        self.sighup.cancel()
        await listeners.close()
        await self.scheduler.stop()
        await runner.cleanup()
        web_config.auth.close()
        return 0
