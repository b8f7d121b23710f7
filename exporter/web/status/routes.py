"""The status pages' HTTP face: ``/``, ``/broker/<name>``, ``/api/v1/brokers[/<name>]``.

Everything is rendered per request from the latest results (a page never triggers a probe), behind the
same ``--web.config.file`` middleware as every other endpoint (``exporter.web`` adds these routes to its
application).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.report import iso8601
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.store import ResultStore
from mqtt_cert_exporter.web.multitarget import DEFAULT_MODULE
from mqtt_cert_exporter.web.status.broker_page import broker_page
from mqtt_cert_exporter.web.status.fleet import (
    Assessor,
    QueryError,
    Row,
    assess_fleet,
    fleet_document,
    parse_query,
    select,
)
from mqtt_cert_exporter.web.status.fleet_page import ProbeHelp, fleet_page
from mqtt_cert_exporter.web.status.html import SECURITY_HEADERS, Links, el, page

log = logs.get_logger("mqtt_cert_exporter.status")

#: Query parameters the pages carry from link to link (anything else is ignored).
PAGE_PARAMETERS = ("q", "status", "page", "per_page")
API_PARAMETERS = ("q", "status", "offset", "limit")
#: Longest unknown broker name echoed on its 404 page; longer ones are cut.
MAX_NAME_LENGTH = 300

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def latest_results(store: ResultStore) -> list[ProbeResult]:
    """The one place the status pages read the store: every broker's latest results."""
    return [result for results in store.results.values() for result in results]


@dataclass(frozen=True)
class StatusSource:
    """What the pages need from the running exporter, read at each request (reloads apply)."""

    #: the brokers this process probes (all, or its --shard's)
    brokers: Callable[[], Sequence[BrokerConfig]]
    results: Callable[[], Iterable[ProbeResult]]
    #: names of the configured modules (multi-target mode)
    modules: Callable[[], Sequence[str]] = tuple
    #: --probe.allowed-target patterns; empty: /probe is off
    probe_patterns: tuple[str, ...] = ()
    #: None: each broker's expiry_warning (the alert rules' threshold)
    warn_days: float | None = None
    clock: Callable[[], float] = field(default=time.time)

    def probe_help(self) -> ProbeHelp:
        modules = (DEFAULT_MODULE, *(name for name in self.modules() if name != DEFAULT_MODULE))
        return ProbeHelp(bool(self.probe_patterns), self.probe_patterns, modules)


def _params(request: web.Request, names: Sequence[str]) -> dict[str, str]:
    return {name: request.query[name] for name in names if name in request.query}


def _html(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def json_text(document: Any) -> str:
    """Compact: with ``indent`` json uses its pure-Python encoder, 2.5x slower on a 10,000-broker answer."""
    return json.dumps(document, separators=(",", ":")) + "\n"


def _json(document: Any, status: int = 200) -> web.Response:
    return web.Response(
        text=json_text(document),
        status=status,
        content_type="application/json",
        headers=SECURITY_HEADERS,
    )


def _error_page(status: int, message: str, links: Links) -> web.Response:
    return _html(page("mqtt-cert-exporter", el("p", message), links), status)


def _guarded(handler: Handler) -> Handler:
    """A bug in a page must not answer a stranger with a stack trace: log it, say where to look."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("status page failed", extra={"path": request.path})
            return web.Response(
                status=503, text="the status page could not be rendered: see the exporter's log\n"
            )

    return guarded


def _broker_name(request: web.Request) -> str:
    return request.match_info["name"]


def status_routes(source: StatusSource) -> list[web.RouteDef]:  # noqa: C901 - counts the small handler closures over the source
    assessor = Assessor(warn_days=source.warn_days)
    rendering = asyncio.Semaphore(1)

    async def fleet_off_the_loop(render: Callable[[list[Row], float], web.Response]) -> web.Response:
        """Assessing and rendering a large fleet takes a while (bench/status.py): it runs in a worker
        thread, one request at a time, so that the event loop keeps probing and answering scrapes. What
        crosses into the thread is a snapshot taken here (immutable results, the configured brokers)."""
        now = source.clock()
        brokers, results = tuple(source.brokers()), list(source.results())
        async with rendering:
            return await asyncio.to_thread(lambda: render(assessor.rows(brokers, results, now=now), now))

    async def index(request: web.Request) -> web.StreamResponse:
        params = _params(request, PAGE_PARAMETERS)
        help_ = source.probe_help()
        try:
            query = parse_query(params, paged=True)
        except QueryError as exc:
            return _error_page(400, str(exc), Links(probe=help_.enabled))

        def render(rows: list[Row], now: float) -> web.Response:
            view = select(rows, query)
            return _html(fleet_page(view, params, warn_days=source.warn_days, now=now, probe=help_))

        return await fleet_off_the_loop(render)

    def one(name: str) -> BrokerConfig | None:
        return next((broker for broker in source.brokers() if broker.name == name), None)

    async def broker(request: web.Request) -> web.StreamResponse:
        name = _broker_name(request)
        probe = source.probe_help().enabled
        found = one(name)
        now = source.clock()
        if found is None:
            return _html(broker_page(name[:MAX_NAME_LENGTH], [], now=now, probe=probe), 404)
        rows = assess_fleet([found], _of(source.results(), name), now=now, warn_days=source.warn_days)
        return _html(broker_page(name, rows, now=now, probe=probe))

    async def api_brokers(request: web.Request) -> web.StreamResponse:
        try:
            query = parse_query(_params(request, API_PARAMETERS), paged=False)
        except QueryError as exc:
            return _json({"error": str(exc)}, 400)

        def render(rows: list[Row], now: float) -> web.Response:
            return _json(fleet_document(select(rows, query), now=now, warn_days=source.warn_days))

        return await fleet_off_the_loop(render)

    async def api_broker(request: web.Request) -> web.StreamResponse:
        name = _broker_name(request)
        found = one(name)
        if found is None:
            return _json({"error": "no broker of that name is configured"}, 404)
        now = source.clock()
        rows = assess_fleet([found], _of(source.results(), name), now=now, warn_days=source.warn_days)
        reports = [row.report.document() for row in rows if row.report is not None]
        return _json({"schema_version": 1, "broker": name, "generated_at": iso8601(now), "reports": reports})

    return [
        web.get("/", _guarded(index)),
        web.get("/broker/{name:.+}", _guarded(broker)),
        web.get("/api/v1/brokers", _guarded(api_brokers)),
        web.get("/api/v1/brokers/{name:.+}", _guarded(api_broker)),
    ]


def _of(results: Iterable[ProbeResult], name: str) -> list[ProbeResult]:
    return [result for result in results if result.broker == name]
