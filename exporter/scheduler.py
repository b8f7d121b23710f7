"""Probe every broker on its own interval, concurrently but bounded, and keep the latest results.

Each broker has one task. Its first probe runs as soon as a slot is free; later probes start on a
fixed grid (a stable per-broker offset within the interval, as Prometheus spreads scrapes), so a fleet
is not probed in lock-step and every broker is probed once per interval. A slow or dead broker holds
one slot for at most its own timeout and never delays another broker's schedule beyond that.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from exporter import logs
from exporter.config import BrokerConfig
from exporter.probe import Prober
from exporter.probe.wire.connection import DescriptorsExhausted
from exporter.results import ProbeResult
from exporter.store import ResultStore

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


@dataclass
class _Job:
    broker: BrokerConfig
    task: asyncio.Task[None]


class Scheduler:
    def __init__(
        self,
        prober: Prober,
        store: ResultStore,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        on_result: Callable[[ProbeResult, ProbeResult | None], None] | None = None,
    ) -> None:
        self._prober = prober
        self._store = store
        self._slots = asyncio.Semaphore(concurrency)
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
            self._jobs.pop(name).task.cancel()
        added = changed = 0
        for name, broker in wanted.items():
            job = self._jobs.get(name)
            if job is not None and job.broker == broker:
                continue
            if job is not None:
                job.task.cancel()
                self._store.forget([name])
                changed += 1
            else:
                added += 1
            task = asyncio.create_task(self._run(broker), name=f"probe:{name}")
            self._jobs[name] = _Job(broker, task)
        self._store.configure(wanted)
        return added, len(removed), changed

    async def stop(self) -> None:
        tasks = [job.task for job in self._jobs.values()]
        self._jobs.clear()
        for task in tasks:
            task.cancel()
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

    async def _run(self, broker: BrokerConfig) -> None:
        scheduled: float | None = None  # the first probe is not on the grid: it runs as soon as it can
        while True:
            started = await self._probe_once(broker, scheduled)
            scheduled = next_start(broker.name, broker.interval, started)
            await asyncio.sleep(max(0.0, scheduled - time.time()))

    async def _probe_once(self, broker: BrokerConfig, scheduled: float | None) -> float:
        async with self._slots:
            started = time.time()
            if scheduled is not None:
                self.max_lag = max(self.max_lag, started - scheduled)
            self.probes_in_flight += 1
            try:
                results = await self._prober.probe_group(broker)
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
        if self._jobs.get(broker.name, None) is None or self._jobs[broker.name].broker != broker:
            return started  # removed or replaced while probing
        published = self._store.publish(results)
        if self._on_result is not None:
            for result, previous in published:
                self._on_result(result, previous)
        return started
