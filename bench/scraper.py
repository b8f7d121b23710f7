"""blackbox_exporter in steady state as users run it: scraped by a real Prometheus (Debian's
``prometheus``), one scrape target per broker through ``/probe``, each at the offset Prometheus gives it.

Why not an HTTP client on a schedule of our own: Prometheus starts every target's scrape at its own
offset (a hash of the target), so blackbox_exporter answers one request per wake-up. Driven on our
exporter's grid instead (offsets rounded to ticks, so the requests of a tick come together), the same
blackbox_exporter on the same lab cost about a third less CPU per probe (1.52-1.73 ms against 2.56-2.73
ms with offsets not rounded, and 2.30-2.38 ms scraped by Prometheus 2.42; 1,000 brokers, 40 s interval):
a batching no Prometheus does. ``bench.compare`` reports both.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from bench.loadlab import Cpu, cpu_of, get_url, parse_metrics
from mqtt_cert_exporter.lab.ports import free_port, wait_for_port
from tests.lab.process import stop_process

#: Prometheus's own count of the scrapes whose interval it measured: every scrape of a target but its first.
SCRAPES = "prometheus_target_interval_length_seconds_count"


@dataclass(frozen=True)
class Scraped:
    """One interval of Prometheus scraping every broker through blackbox_exporter's ``/probe``."""

    probes: int  # scrapes that ended in the measured interval
    wall: float
    cpu: Cpu  # blackbox_exporter's
    succeeded: int  # brokers whose last probe succeeded
    with_expiry: int  # brokers whose last answer carried probe_ssl_earliest_cert_expiry


def prometheus_binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise RuntimeError("prometheus is not installed (Debian package prometheus)")
    return found


def scrape_timeout(interval: float, timeout: float) -> float:
    """Longer than blackbox's module timeout (it gives up first and answers), at most the interval."""
    return min(interval, timeout + 5)


def prometheus_config(
    blackbox: str, brokers: Sequence[tuple[str, str]], module: str, interval: float, timeout: float
) -> str:
    """One scrape target per broker (name, host:port): a label per broker keeps brokers that share an
    address (the lab's black holes) apart, as a real fleet's names would."""
    targets = [{"targets": [address], "labels": {"broker": name}} for name, address in brokers]
    job = {
        "job_name": "blackbox",
        "metrics_path": "/probe",
        "params": {"module": [module]},
        "scrape_interval": f"{interval:g}s",
        "scrape_timeout": f"{scrape_timeout(interval, timeout):g}s",
        "static_configs": targets,
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"target_label": "__address__", "replacement": blackbox},
        ],
    }
    return json.dumps({"scrape_configs": [job]})  # YAML is a superset of JSON


def scraped_by_prometheus(
    base: str,
    pid: int,
    brokers: Sequence[tuple[str, str]],
    module: str,
    workdir: Path,
    *,
    interval: float,
    timeout: float,
) -> Scraped:
    """blackbox_exporter (``base``, process ``pid``) scraped by a fresh Prometheus: one interval to start
    every target's scrape loop, then the measured interval (CPU from /proc, scrapes from Prometheus)."""
    shutil.rmtree(workdir / "tsdb", ignore_errors=True)  # an earlier pass's series are not this one's
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(prometheus_config(base.split("//", 1)[1], brokers, module, interval, timeout))
    port = free_port()
    own = f"http://127.0.0.1:{port}"
    command = [
        prometheus_binary(),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=warn",
    ]
    with open(workdir / "prometheus.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=30)
        # every target scraped once: each loop starts at its own offset in the first interval
        time.sleep(interval + scrape_timeout(interval, timeout))
        scrapes, cpu, started = _scrapes(own), cpu_of(pid), time.monotonic()
        time.sleep(interval)
        probes, spent, wall = _scrapes(own) - scrapes, cpu_of(pid) - cpu, time.monotonic() - started
        succeeded = _count(own, "probe_success == 1")
        with_expiry = _count(own, "probe_ssl_earliest_cert_expiry")
    finally:
        stop_process(process)
    return Scraped(probes, wall, spent, succeeded, with_expiry)


def _scrapes(base: str) -> int:
    found = parse_metrics(get_url(base + "/metrics").decode(), [SCRAPES])
    return round(sum(value for _labels, value in found[SCRAPES]))


def _count(base: str, selector: str) -> int:
    query = quote(f"count({selector})", safe="")
    answer = json.loads(get_url(f"{base}/api/v1/query?query={query}"))
    result = answer["data"]["result"]
    return int(float(result[0]["value"][1])) if result else 0
