"""Probe every broker on its own interval, concurrently but bounded, and keep the latest results.

Each broker has one task while it is probed, and a timer until its next probe. Its first probe runs as
soon as it is admitted; later probes start on a fixed grid (a stable per-broker offset within the
interval, as Prometheus spreads scrapes), so a fleet is not probed in lock-step and every broker is
probed once per interval. A slow or dead broker holds its place for at most its own timeout and never
delays another broker's schedule beyond that.

Admission (``exporter.admission``, issue 16): a probe takes a CPU-bearing slot only once TCP is
connected; a black hole (a connect that never completes) holds only a connect permit, bounded by the
open-file limit, so on a first sweep the black holes wait out their timeouts together instead of
taking turns in the slots.

Fair budgets (issue 18.13): a silent broker or a black hole holds its place for its whole timeout, a
healthy one for milliseconds. When silent brokers need more place-seconds than there are (450 of 500
brokers with a 10 s timeout on a 30 s interval need 150 places), one queue made healthy brokers wait
behind them and slip off their grid. So brokers whose last probe timed out (suspects) never hold
the last quarter of a budget, and a freed place goes to a healthy broker first (``SlotBudget``). The
price is paid by the suspects alone: past their share their probes run later than their grid (a
recovered broker is seen at its next probe, then is healthy again).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.admission import Budgets, connect_limit
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.wire.connection import DescriptorsExhausted
from mqtt_cert_exporter.results import ProbeResult, Reason
from mqtt_cert_exporter.store import ResultStore

log = logs.get_logger(__name__)

DEFAULT_CONCURRENCY = 128
#: Seconds between two log lines about running out of file descriptors.
EXHAUSTION_LOG_INTERVAL = 10.0


#: Offsets are rounded down to ticks of this many seconds (at most 1/60 of the interval). Probes that
#: start in the same tick share event-loop wake-ups; measured here, steady-state CPU per probe fell by
#: about a quarter against one probe per wake-up, and a fleet is still spread over the interval.
GRID_TICK = 1.0


def grid_offset(name: str, interval: float) -> float:
    """A stable offset in [0, interval) per broker name, on a tick of the grid."""
    digest = hashlib.sha256(name.encode()).digest()
    offset = int.from_bytes(digest[:8], "big") / 2**64 * interval
    tick = min(GRID_TICK, interval / 60)
    return offset - offset % tick


def next_start(name: str, interval: float, last_start: float) -> float:
    """The first grid point at least half an interval after ``last_start``."""
    offset = grid_offset(name, interval)
    earliest = last_start + interval / 2
    periods = (earliest - offset) // interval + 1
    return offset + periods * interval


def timed_out(results: Sequence[ProbeResult]) -> bool:
    """Whether a probe ran into its deadline (it held its slot for the whole timeout)."""
    return any(
        failure is not None and failure.reason is Reason.TIMEOUT
        for result in results
        for failure in (result.failure, result.secondary_failure)
    )


@dataclass(slots=True)
class _Job:
    """A broker's schedule: probing (``task``), or waiting for its next grid point (``timer``). A waiting
    broker holds a timer, not a sleeping task: 10,000 sleeping tasks (task, coroutine frames, the sleep's
    future and timer) held about 15 MB."""

    broker: BrokerConfig
    task: asyncio.Task[None] | None = None
    timer: asyncio.TimerHandle | None = None

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.task is not None:
            self.task.cancel()


class Scheduler:
    def __init__(
        self,
        prober: Prober,
        store: ResultStore,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        connects: int | None = None,
        on_result: Callable[[ProbeResult, ProbeResult | None], None] | None = None,
    ) -> None:
        self._prober = prober
        self._store = store
        #: connect permits, slots and pipeline (exporter.admission); connects: from the open-file limit
        self.budgets = Budgets(concurrency, connects or connect_limit(concurrency, other_descriptors=0))
        #: brokers whose last probe timed out (they wait for the suspects' pool)
        self.suspects: set[str] = set()
        self._jobs: dict[str, _Job] = {}
        self._on_result = on_result
        self.max_lag = 0.0
        self.probes_in_flight = 0
        self._exhaustion_logged = -EXHAUSTION_LOG_INTERVAL
        self._exhaustion_skipped = 0

    @property
    def brokers(self) -> list[BrokerConfig]:
        return [job.broker for job in self._jobs.values()]

    def apply(self, brokers: Sequence[BrokerConfig]) -> tuple[int, int, int]:
        """Adopt a configuration: start added brokers, stop removed ones, restart changed ones.

        Unchanged brokers keep their results and their schedule. Returns (added, removed, changed).
        """
        wanted = {broker.name: broker for broker in brokers}
        removed = [name for name in self._jobs if name not in wanted]
        for name in removed:
            self._jobs.pop(name).cancel()
            self.suspects.discard(name)
        added = changed = 0
        for name, broker in wanted.items():
            job = self._jobs.get(name)
            if job is not None and job.broker == broker:
                continue
            if job is not None:
                job.cancel()
                self._store.forget([name])
                changed += 1
            else:
                added += 1
            job = self._jobs[name] = _Job(broker)
            self._start(job, None)
        self._store.configure(wanted)
        self._prober.configure(wanted.values())
        return added, len(removed), changed

    async def stop(self) -> None:
        jobs = list(self._jobs.values())
        self._jobs.clear()
        tasks = [job.task for job in jobs if job.task is not None]
        for job in jobs:
            job.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _report_exhaustion(self, broker: str, detail: str) -> None:
        """One log line per EXHAUSTION_LOG_INTERVAL at most: exhaustion hits every probe at once."""
        now = time.monotonic()
        self._exhaustion_skipped += 1
        if now - self._exhaustion_logged < EXHAUSTION_LOG_INTERVAL:
            return
        log.error(
            "probe skipped: the exporter is out of file descriptors (raise its limit or lower "
            "--probe.concurrency and --web.max-connections)",
            extra={"broker": broker, "error": detail, "skipped_since_last_line": self._exhaustion_skipped},
        )
        self._exhaustion_logged, self._exhaustion_skipped = now, 0

    def _start(self, job: _Job, scheduled: float | None) -> None:
        """Probe the job's broker now (``scheduled``: its grid point; None for the first probe, which is
        not on the grid: it runs as soon as it can)."""
        job.timer = None
        job.task = asyncio.create_task(self._run(job, scheduled), name=f"probe:{job.broker.name}")

    async def _run(self, job: _Job, scheduled: float | None) -> None:
        """One probe, then a timer for the broker's next grid point."""
        broker = job.broker
        started = await self._probe_once(broker, scheduled)
        if self._jobs.get(broker.name) is not job:
            return  # removed or replaced while probing
        job.task = None
        following = next_start(broker.name, broker.interval, started)
        loop = asyncio.get_running_loop()
        job.timer = loop.call_at(loop.time() + max(0.0, following - time.time()), self._start, job, following)

    async def _probe_once(self, broker: BrokerConfig, scheduled: float | None) -> float:
        async with self.budgets.admission(suspect=broker.name in self.suspects) as admission:
            started = time.time()
            if scheduled is not None:
                self.max_lag = max(self.max_lag, started - scheduled)
            self.probes_in_flight += 1
            try:
                results = await self._prober.probe_group(broker, admit=admission.admit)
            except asyncio.CancelledError:
                raise
            except DescriptorsExhausted as exc:
                # The exporter's problem, not the broker's: its previous result stands (issue 18.13).
                self._report_exhaustion(broker.name, str(exc))
                return started
            except Exception:  # a bug in one probe must not stop this broker's schedule
                log.exception("probe of broker %s crashed", broker.name)
                return started
            finally:
                self.probes_in_flight -= 1
        job = self._jobs.get(broker.name)
        if job is None or job.broker is not broker:  # apply() replaces a job only for a changed broker
            return started  # removed or replaced while probing
        if timed_out(results):
            self.suspects.add(broker.name)
        else:
            self.suspects.discard(broker.name)
        published = self._store.publish(results)
        if self._on_result is not None:
            for result, previous in published:
                self._on_result(result, previous)
        return started
