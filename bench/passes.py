"""One pass of each contender on the load lab (``bench.loadlab``), as ``bench.compare`` runs them: the
TLS handshake floor (``openssl s_time``), blackbox_exporter through ``/probe``, our exporter as users run
it (first sweep, ``/metrics``, one steady interval, a profile) and the lean prober (``bench.lean``).
Each returns what it measured; ``bench.comparison`` holds them together.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import resource
import shutil
import statistics
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.lean import LeanPass, finish_lean, start_lean
from bench.loadlab import (
    Cpu,
    Fleet,
    LogCounter,
    Samples,
    cpu_of,
    drive_blackbox,
    exporter_config,
    get_url,
    memory_mb,
    parse_metrics,
    per_broker,
    scalar,
    wait_for_log,
)
from bench.profiling import ROOT, Profile, profile_process
from bench.scraper import scraped_by_prometheus
from tests.lab.process import start_exporter_process, stop_process

FLOOR_SECONDS = 5
SCRAPES = 5
PROFILE_SECONDS = 15.0

# ------------------------------------------------------------------------------------------ the floor


@dataclass(frozen=True)
class Floor:
    handshakes: int
    wall: float
    cpu: float

    @property
    def cpu_per_handshake(self) -> float:
        return self.cpu / self.handshakes if self.handshakes else float("nan")

    @property
    def rate(self) -> float:
        return self.handshakes / self.wall if self.wall else float("nan")


def handshake_floor(port: int, seconds: int = FLOOR_SECONDS) -> Floor:
    """``openssl s_time -new`` against one listener; the client's CPU from its rusage."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed (Debian package openssl)")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result = subprocess.run(
        [openssl, "s_time", "-new", "-connect", f"127.0.0.1:{port}", "-time", str(seconds)],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    found = re.search(r"(\d+) connections in [\d.]+s", result.stdout)
    if result.returncode != 0 or found is None:
        raise RuntimeError(f"openssl s_time failed:\n{result.stdout}\n{result.stderr}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Floor(int(found.group(1)), wall, cpu)


# ------------------------------------------------------------------------------------------ blackbox


@dataclass(frozen=True)
class BlackboxPass:
    module: str
    #: "burst": every broker at once, `concurrency` at a time; "steady": scraped by Prometheus, each broker
    #: at its own offset; "grid": spread over an interval on our exporter's grid (requests of a tick together)
    mode: str
    probes: int
    wall: float
    cpu: Cpu
    succeeded: int
    with_expiry: int  # answers carrying probe_ssl_earliest_cert_expiry

    @property
    def cpu_per_probe(self) -> float:
        return self.cpu.total / self.probes


def blackbox_pass(
    base: str,
    pid: int,
    fleet: Fleet,
    module: str,
    *,
    concurrency: int,
    timeout: float,
    interval: float | None = None,
) -> BlackboxPass:
    targets = [broker.address for broker in fleet.brokers]
    before = cpu_of(pid)
    wall, succeeded, with_expiry = asyncio.run(
        drive_blackbox(base, targets, module, concurrency, timeout, interval)
    )
    mode = "grid" if interval else "burst"
    return BlackboxPass(module, mode, len(targets), wall, cpu_of(pid) - before, succeeded, with_expiry)


def blackbox_scraped_pass(
    base: str, pid: int, fleet: Fleet, module: str, workdir: Path, *, timeout: float, interval: float
) -> BlackboxPass:
    """blackbox_exporter in steady state as users run it: a real Prometheus scrapes every broker through
    it (``bench.scraper``)."""
    brokers = [(broker.name, broker.address) for broker in fleet.brokers]
    found = scraped_by_prometheus(base, pid, brokers, module, workdir, interval=interval, timeout=timeout)
    return BlackboxPass(
        module, "steady", found.probes, found.wall, found.cpu, found.succeeded, found.with_expiry
    )


# ------------------------------------------------------------------------------------------ our exporter


@dataclass(frozen=True)
class ScrapeCost:
    """/metrics with every broker: a scrape after every result was renewed (one steady interval after
    the previous scrape), repeated scrapes (median) while no result changed, and the very first scrape
    of the process (one-time costs: the intervals' text, first touch of a 20 MB buffer)."""

    first_wall: float  # seconds, as the scraper sees it
    first_cpu: float  # exporter CPU seconds
    warm_wall: float
    warm_cpu: float
    bytes: int
    series: int
    probing: bool  # True when probes were due during the scrapes (then the figures are upper bounds)
    #: every result renewed since the previous scrape (set once the steady interval has passed)
    cold_wall: float = 0.0
    cold_cpu: float = 0.0
    #: the exporter's own account of the 'every result new' scrape (mqtt_cert_exporter_metrics_render_seconds):
    #: its rendering alone, without the probes that ran meanwhile or the transfer
    cold_render: float = 0.0


@dataclass
class ExporterRun:
    brokers: int
    interval: float
    sweep_wall: float = 0.0
    sweep_cpu: Cpu = field(default_factory=Cpu)
    start_rss: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    mean_live_duration: float = 0.0
    scrape: ScrapeCost | None = None
    steady_cpu: Cpu = field(default_factory=Cpu)
    steady_probes: int = 0  # started in the measured interval: every broker once (its grid point)
    steady_finished: int = 0  # results that changed between the scrapes around it (a check)
    max_lag: float = float("nan")
    steady_rss: float = 0.0
    peak_rss: float = 0.0
    profile: Profile | None = None
    layers: list[tuple[str, float]] = field(default_factory=list)

    @property
    def sweep_cpu_per_probe(self) -> float:
        return self.sweep_cpu.total / self.brokers

    @property
    def steady_cpu_per_probe(self) -> float:
        return self.steady_cpu.total / self.steady_probes if self.steady_probes else float("nan")


def auto_interval(brokers: int, holes_share: float, timeout: float, concurrency: int) -> float:
    """An interval whose first half holds the whole first sweep (so /metrics is measured while nothing
    is due) and whose steady state needs at most half the concurrency slots."""
    holes_wall = brokers * holes_share * timeout / concurrency
    live_wall = brokers * 0.006  # generous: a few ms of CPU per first probe, on one core
    return float(max(30, math.ceil(2 * (holes_wall + live_wall + 5) / 10) * 10))


RENDER_SECONDS = "mqtt_cert_exporter_metrics_render_seconds"
RESULTS = (
    "mqtt_broker_probe_timestamp_seconds",
    "mqtt_broker_probe_duration_seconds",
    "mqtt_broker_probe_success",
    "mqtt_broker_probe_failure",
    "mqtt_broker_cert_not_after_timestamp_seconds",
    "mqtt_cert_exporter_schedule_lag_max_seconds",
)


def run_exporter(  # noqa: PLR0915 - debt: one step per exporter flag and readiness check
    fleet: Fleet, workdir: Path, *, concurrency: int, timeout: float, interval: float, profile: bool
) -> ExporterRun:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(exporter_config(fleet, interval, timeout))
    log_path = workdir / "exporter.log"
    run = ExporterRun(brokers=len(fleet.brokers), interval=interval)
    process, base = start_exporter_process(
        config, log_path, f"--probe.concurrency={concurrency}", cwd=ROOT, timeout=60
    )
    try:
        url = base + "/metrics"
        wait_for_log(log_path, process, b"msg=started", 60)
        cpu0 = cpu_of(process.pid)
        run.start_rss = memory_mb(process.pid, "VmRSS")
        # 1. the first sweep: every broker's first result is logged once (a state change from nothing),
        # which costs the exporter nothing extra, unlike polling /metrics (the fallback, should that
        # log line ever change)
        counter = LogCounter(log_path)
        begun = time.monotonic()
        deadline = begun + 120 + len(fleet.brokers) * (timeout / concurrency + 0.05)
        while counter.poll() < len(fleet.brokers):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"first sweep incomplete: {counter.count}/{len(fleet.brokers)} results; "
                    f"log tail:\n{log_path.read_text(errors='replace')[-3000:]}"
                )
            if not counter.count and time.monotonic() - begun > 2 * timeout + 5:
                done = per_broker(parse_metrics(get_url(url).decode(), RESULTS[:1]), RESULTS[0])
                if len(done) >= len(fleet.brokers):
                    break
                time.sleep(1.0)
            time.sleep(0.02)
        run.sweep_cpu = cpu_of(process.pid) - cpu0
        body, first_wall, first_cpu = timed_get(url, process.pid)
        samples = parse_metrics(body.decode(), RESULTS)
        finished = per_broker(samples, "mqtt_broker_probe_timestamp_seconds")
        total = per_broker(samples, "mqtt_broker_probe_duration_seconds", phase="total")
        missing = {broker.name for broker in fleet.brokers} - set(finished)
        if missing:
            raise RuntimeError(f"{len(missing)} brokers have no result after the first sweep")
        starts = {name: finished[name] - total.get(name, 0.0) for name in finished}
        run.sweep_wall = max(finished.values()) - min(starts.values())
        run.outcomes = _outcomes(samples, fleet)
        # 2. scrape cost: no probe is due before half an interval after each broker's first probe
        run.scrape = measure_scrapes(
            url, process.pid, (first_wall, first_cpu), quiet_until=min(starts.values()) + interval / 2
        )
        # 3. one steady-state interval: every broker exactly once (its grid point), no first-probe extras
        window_start = max(starts.values()) + interval / 2 + 1.0
        time.sleep(max(0.0, window_start - time.time()))
        before = per_broker(parse_metrics(get_url(url).decode(), RESULTS), RESULTS[0])
        cpu_a = cpu_of(process.pid)
        time.sleep(interval)
        cpu_b = cpu_of(process.pid)
        run.steady_rss = memory_mb(process.pid, "VmRSS")
        body, cold_wall, cold_cpu = timed_get(url, process.pid)  # every result renewed since the last scrape
        after_samples = parse_metrics(body.decode(), RESULTS)
        render = scalar(parse_metrics(get_url(url).decode(), [RENDER_SECONDS]), RENDER_SECONDS)
        if run.scrape is not None:
            run.scrape = dataclasses.replace(
                run.scrape, cold_wall=cold_wall, cold_cpu=cold_cpu, cold_render=render
            )
        after = per_broker(after_samples, RESULTS[0])
        run.steady_cpu = cpu_b - cpu_a
        run.steady_probes = len(fleet.brokers)
        run.steady_finished = sum(1 for name, ts in after.items() if before.get(name) != ts)
        run.max_lag = scalar(after_samples, "mqtt_cert_exporter_schedule_lag_max_seconds")
        # how long a live broker holds a slot in steady state (first-sweep durations include queueing)
        total = per_broker(after_samples, "mqtt_broker_probe_duration_seconds", phase="total")
        live = [total[b.name] for b in fleet.brokers if b.kind != "black_hole" and b.name in total]
        run.mean_live_duration = statistics.fmean(live) if live else 0.0
        # 4. where the time goes, in a further steady interval (so the samplers do not disturb the above)
        if profile:
            run.profile, run.layers = profile_process(process.pid, workdir, min(interval, PROFILE_SECONDS))
        run.peak_rss = memory_mb(process.pid, "VmHWM")
    finally:
        stop_process(process)
    return run


def _outcomes(samples: Samples, fleet: Fleet) -> dict[str, int]:
    """kind -> how our exporter saw it, e.g. {'good: success': 800, 'expired: trust/untrusted': 50}."""
    success = per_broker(samples, "mqtt_broker_probe_success")
    failures = {
        labels["broker"]: f"{labels['stage']}/{labels['reason']}"
        for labels, value in samples.get("mqtt_broker_probe_failure", [])
        if value == 1.0
    }
    expiry = per_broker(samples, "mqtt_broker_cert_not_after_timestamp_seconds", position="0")
    seen: Counter[str] = Counter()
    for broker in fleet.brokers:
        verdict = "success" if success.get(broker.name) == 1.0 else failures.get(broker.name, "?")
        seen[f"{broker.kind}: {verdict}"] += 1
        if broker.name in expiry:
            seen[f"{broker.kind}: leaf expiry seen"] += 1
    return dict(sorted(seen.items()))


def timed_get(url: str, pid: int) -> tuple[bytes, float, float]:
    """The body, the wall time the scraper waited for it, and the CPU seconds process ``pid`` spent."""
    before = cpu_of(pid)
    started = time.perf_counter()
    body = get_url(url)
    return body, time.perf_counter() - started, (cpu_of(pid) - before).total


def measure_scrapes(url: str, pid: int, first: tuple[float, float], quiet_until: float) -> ScrapeCost:
    walls: list[float] = []
    cpus: list[float] = []
    size = series = 0
    for _ in range(SCRAPES):
        body, wall, cpu = timed_get(url, pid)
        walls.append(wall)
        cpus.append(cpu)
        size = len(body)
        series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    probing = time.time() > quiet_until
    warm_wall, warm_cpu = statistics.median(walls), statistics.median(cpus)
    return ScrapeCost(first[0], first[1], warm_wall, warm_cpu, size, series, probing)


def run_lean(
    targets: Sequence[str],
    ca_file: Path,
    workdir: Path,
    *,
    concurrency: int,
    timeout: float,
    interval: float | None = None,
    profile: bool,
) -> tuple[LeanPass, Profile | None]:
    """The lean prober over every target (all at once, or spread over ``interval``), its Python side
    profiled as ours is (py-spy over the same duration) when ``profile``."""
    process = start_lean(
        targets, ca_file, workdir, concurrency=concurrency, timeout=timeout, interval=interval
    )
    found = None
    if profile and interval:
        time.sleep(1.0)  # its start-up (imports) is not probing
        found, _layers = profile_process(process.pid, workdir, min(interval - 2, PROFILE_SECONDS))
    limit = (interval or 0) + len(targets) * timeout / concurrency + 120
    return finish_lean(process, "steady" if interval else "burst", limit), found
