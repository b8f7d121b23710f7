"""The exporter's own trouble as metrics: file descriptors running out, HTTP connections it had to close.

Separate from exporter.collector (the fleet's metrics and the basic self metrics) so the web layer's
defences report without touching it.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter.probe.wire.connection import FD_EXHAUSTION
from exporter.webserver import ConnectionGuard


class TroubleCollector(Collector):
    def __init__(self, connections: ConnectionGuard) -> None:
        self._connections = connections

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "mqtt_cert_exporter_fd_exhaustion",
            "Probe connects that failed because the exporter ran out of file descriptors (EMFILE/ENFILE); "
            "such a probe is skipped and the broker keeps its previous result.",
            value=FD_EXHAUSTION.count,
        )
        yield GaugeMetricFamily(
            "mqtt_cert_exporter_http_connections",
            "HTTP connections open to the exporter (at most --web.max-connections).",
            value=self._connections.open_connections,
        )
        closed = CounterMetricFamily(
            "mqtt_cert_exporter_http_connections_closed",
            "HTTP connections the exporter closed: evicted (longest idle, to stay under "
            "--web.max-connections) or header_timeout (no complete request head within 10 s).",
            labels=["reason"],
        )
        closed.add_metric(["evicted"], self._connections.evicted)
        closed.add_metric(["header_timeout"], self._connections.timed_out)
        yield closed
