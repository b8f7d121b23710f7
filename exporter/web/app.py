"""The HTTP face: /metrics, /probe, /-/healthy, /-/ready, /-/reload and a small index page."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, choose_encoder, generate_latest

from mqtt_cert_exporter import __version__
from mqtt_cert_exporter.web import openmetrics

INDEX = """<!doctype html>
<html><head><title>mqtt-cert-exporter</title></head>
<body>
<h1>mqtt-cert-exporter {version}</h1>
<p>Probes MQTT brokers over TLS: certificate expiry, trust problems, handshake and CONNACK failures.</p>
<ul>
<li><a href="metrics">metrics</a></li>
<li><a href="-/healthy">health</a></li>
<li><a href="-/ready">readiness</a></li>
</ul>
</body></html>
"""


#: The body of /metrics after the exporter's own metrics (``BrokerExposition.body``): (head, a rewrite of
#: each family's HELP and TYPE lines or None, tail) -> bytes
BrokerBody = Callable[[str, Callable[[str], str] | None, str], bytes]


class WebState:
    def __init__(self) -> None:
        self.ready = False
        #: seconds the previous /metrics response took to render (in the event loop)
        self.metrics_render_seconds = 0.0


def build_app(  # noqa: C901 - counts the small handler closures over the app's state
    registry: CollectorRegistry,
    state: WebState,
    *,
    reload: Callable[[], Awaitable[tuple[bool, str]]] | None = None,
    middlewares: Sequence[Any] = (),
    probe: Callable[[web.Request], Awaitable[web.StreamResponse]] | None = None,
    broker_body: BrokerBody | None = None,
    telemetry_path: str = "/metrics",
    pages: Sequence[web.RouteDef] = (),
) -> web.Application:
    """``pages``: more routes (the status pages); when given, they own ``/`` instead of the small index."""

    async def metrics(request: web.Request) -> web.Response:
        wants_openmetrics = wants_open_metrics(request.headers.get("Accept", ""))
        if broker_body is not None:
            # The fleet's part is cached 0.0.4 text, encoded; OpenMetrics is that text with its headers
            # rewritten. One body is built, never a text and then its bytes (24 MB each at 10,000 brokers).
            started = time.perf_counter()
            head = generate_latest(registry).decode()
            if wants_openmetrics:
                body = broker_body(
                    openmetrics.rewrite_headers(head), openmetrics.rewrite_headers, openmetrics.EOF
                )
            else:
                body = broker_body(head, None, "")
            state.metrics_render_seconds = time.perf_counter() - started
            content_type = openmetrics.CONTENT_TYPE if wants_openmetrics else CONTENT_TYPE_LATEST
        else:
            encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
            body = encoder(registry)
        return compressed(request, web.Response(body=body, headers={"Content-Type": content_type}))

    async def healthy(_: web.Request) -> web.Response:
        return web.Response(text="Healthy\n")

    async def ready(_: web.Request) -> web.Response:
        if state.ready:
            return web.Response(text="Ready\n")
        return web.Response(status=503, text="Not ready: configuration not loaded yet\n")

    async def index(_: web.Request) -> web.Response:
        return web.Response(text=INDEX.format(version=__version__), content_type="text/html")

    async def do_reload(_: web.Request) -> web.Response:
        if reload is None:
            return web.Response(status=404, text="reload is not available\n")
        ok, message = await reload()
        return web.Response(status=200 if ok else 500, text=message + "\n")

    app = web.Application(middlewares=list(middlewares))
    if not pages:
        app.router.add_get("/", index)
    app.router.add_routes(pages)
    app.router.add_get(telemetry_path, metrics)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", do_reload)
    if probe is not None:
        app.router.add_get("/probe", probe)
    return app


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """``:9883`` (all interfaces), ``127.0.0.1:9883``, ``[::1]:9883``; port 0 picks a free port."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--web.listen-address {text!r}: expected [host]:port, e.g. :9883")
    host = host.strip("[]")
    return (host or None), int(port)


def wants_open_metrics(accept: str) -> bool:
    """Whether an Accept header asks for OpenMetrics (prometheus_client's rule, which /probe uses too)."""
    return choose_encoder(accept)[1].startswith("application/openmetrics-text")


def accepts_gzip(accept_encoding: str) -> bool:
    """``gzip`` is listed in Accept-Encoding without ``q=0`` (promhttp's rule: gzip or identity)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() != "gzip":
            continue
        quality = params.strip().lower().removeprefix("q=")
        try:
            return not params.strip() or float(quality) > 0
        except ValueError:
            return False
    return False


def compressed(request: web.Request, response: web.Response) -> web.Response:
    """The response gzipped when the client accepts it (aiohttp compresses bodies over 4 KiB in a thread)."""
    response.headers["Vary"] = "Accept-Encoding"
    if accepts_gzip(request.headers.get("Accept-Encoding", "")):
        response.enable_compression(web.ContentCoding.gzip)
    return response
