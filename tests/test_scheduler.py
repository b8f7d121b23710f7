"""Scheduling logic: the grid, bounded concurrency and reload diffing.

The prober here is a stand-in that records calls: what is under test is the scheduler's bookkeeping,
not the network (the network is tested against real brokers elsewhere)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

from hypothesis import given
from hypothesis import strategies as st

from mqtt_cert_exporter.admission import SlotBudget
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.steps import Admit
from mqtt_cert_exporter.results import Failure, ProbeResult, Reason, Stage
from mqtt_cert_exporter.scheduler import Scheduler, grid_offset, next_start
from mqtt_cert_exporter.store import ResultStore


@given(st.text(min_size=1, max_size=30), st.floats(min_value=0.5, max_value=86400), st.floats(0, 2e9))
def test_next_start_is_on_the_grid_and_at_least_half_an_interval_later(
    name: str, interval: float, last: float
) -> None:
    offset = grid_offset(name, interval)
    assert 0 <= offset < interval
    start = next_start(name, interval, last)
    assert start >= last + interval / 2 - 1e-6
    assert start < last + interval * 1.5 + 1e-6
    periods = (start - offset) / interval
    assert abs(periods - round(periods)) < 1e-6 * max(1.0, abs(periods))


def test_steady_state_period_is_the_interval() -> None:
    first = next_start("plant-a", 60, 1000.0)
    assert next_start("plant-a", 60, first) - first == 60


def test_offsets_spread_a_fleet() -> None:
    offsets = sorted(grid_offset(f"broker-{i}", 60) for i in range(1000))
    buckets = [0] * 6
    for offset in offsets:
        buckets[int(offset // 10)] += 1
    assert min(buckets) > 100  # roughly uniform: no lock-step


class RecordingProber(Prober):
    def __init__(self, delay: float = 0.05) -> None:
        super().__init__()
        self.delay = delay
        self.calls: list[str] = []
        self.running = 0
        self.max_running = 0

    async def probe(self, broker: BrokerConfig, admit: Admit | None = None) -> ProbeResult:
        self.calls.append(broker.name)
        if admit is not None:  # "connected": the slot, as the real prober takes it
            await admit()
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        finally:
            self.running -= 1
        now = time.time()
        return ProbeResult(broker.name, broker.address, "127.0.0.1", now, now, (), None)


def brokers(*names: str, interval: float = 3600) -> list[BrokerConfig]:
    return [BrokerConfig(name, Target("127.0.0.1", 8883), interval=interval, timeout=1) for name in names]


async def wait_until(predicate: object, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_concurrency_is_bounded() -> None:
    prober, store = RecordingProber(), ResultStore()
    scheduler = Scheduler(prober, store, concurrency=3)
    scheduler.apply(brokers(*(f"b{i}" for i in range(12))))
    await wait_until(lambda: len(store.results) == 12)
    assert prober.max_running == 3
    await scheduler.stop()


async def test_reload_adds_removes_changes_and_keeps_unchanged() -> None:
    prober, store = RecordingProber(delay=0), ResultStore()
    scheduler = Scheduler(prober, store)
    scheduler.apply(brokers("keep", "drop", "change"))
    await wait_until(lambda: len(store.results) == 3)
    kept = store.results["keep"]
    store.failure_counts[("drop", "", Stage.CONNECT, Reason.REFUSED)] = 3
    changed = dataclasses.replace(brokers("change")[0], timeout=0.5)
    added, removed, changes = scheduler.apply([brokers("keep")[0], changed, *brokers("new")])
    assert (added, removed, changes) == (1, 1, 1)
    assert "drop" not in store.results and not any(k[0] == "drop" for k in store.failure_counts)
    await wait_until(lambda: {"keep", "change", "new"} == set(store.results))
    assert store.results["keep"] is kept  # unchanged: result and schedule kept, not re-probed
    assert prober.calls.count("keep") == 1 and prober.calls.count("change") == 2
    assert set(store.intervals) == {"keep", "change", "new"}
    await scheduler.stop()


async def test_stop_cancels_in_flight_probes() -> None:
    prober, store = RecordingProber(delay=30), ResultStore()
    scheduler = Scheduler(prober, store)
    scheduler.apply(brokers("slow"))
    await wait_until(lambda: prober.running == 1)
    started = time.monotonic()
    await scheduler.stop()
    assert time.monotonic() - started < 1
    assert prober.running == 0


async def test_suspects_leave_a_reserve_and_freed_slots_go_to_healthy_brokers_first() -> None:
    """Issue 18.13: black holes queued first must not stand in front of healthy brokers."""
    budget = SlotBudget(4)  # suspects may hold 3, one slot is kept for the others
    done = {name: asyncio.Event() for name in [*(f"dead-{i}" for i in range(8)), "ok-0", "ok-1", "ok-2"]}
    inside: list[str] = []

    async def probe(name: str) -> None:
        async with budget.slot(suspect=name.startswith("dead")):
            inside.append(name)
            await done[name].wait()

    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(probe(f"dead-{i}")) for i in range(8)]
    await settle()  # every black hole is queued before any healthy broker
    assert inside == ["dead-0", "dead-1", "dead-2"]
    tasks += [asyncio.create_task(probe(f"ok-{i}")) for i in range(3)]
    await settle()
    assert inside[3:] == ["ok-0"]  # the reserve; the other two wait, all slots are held
    done["dead-0"].set()
    await settle()
    assert inside[4:] == ["ok-1"]  # a freed slot goes to a healthy broker, not to dead-3 queued first
    done["ok-0"].set()
    done["ok-1"].set()
    await settle()
    assert inside[5:] == ["ok-2", "dead-3"]
    for event in done.values():
        event.set()
    await asyncio.gather(*tasks)
    assert sorted(inside) == sorted(done)


async def test_a_cancelled_wait_gives_no_slot_away() -> None:
    budget = SlotBudget(1)
    release = asyncio.Event()

    async def hold(suspect: bool) -> None:
        async with budget.slot(suspect=suspect):
            await release.wait()

    holder = asyncio.create_task(hold(False))
    await asyncio.sleep(0)
    waiters = [asyncio.create_task(hold(suspect)) for suspect in (True, False)]
    await asyncio.sleep(0)
    for waiter in waiters:
        waiter.cancel()
    release.set()
    await asyncio.gather(holder, *waiters, return_exceptions=True)
    async with asyncio.timeout(5):  # both kinds still get the one slot
        async with budget.slot(suspect=True):
            pass
        async with budget.slot(suspect=False):
            pass


class TimingOutProber(RecordingProber):
    """Brokers named in ``silent`` time out (without the wait: only the bookkeeping is under test)."""

    def __init__(self) -> None:
        super().__init__(delay=0)
        self.silent: set[str] = set()

    async def probe(self, broker: BrokerConfig, admit: Admit | None = None) -> ProbeResult:
        result = await super().probe(broker, admit)
        if broker.name in self.silent:
            return dataclasses.replace(result, failure=Failure(Stage.CONNECT, Reason.TIMEOUT))
        return result


async def test_a_broker_is_a_suspect_while_its_last_probe_timed_out() -> None:
    prober, store = TimingOutProber(), ResultStore()
    prober.silent = {"black-hole", "recovers"}
    scheduler = Scheduler(prober, store)
    scheduler.apply(brokers("healthy", "black-hole", "recovers", interval=0.5))
    await wait_until(lambda: len(store.results) == 3)
    assert scheduler.suspects == {"black-hole", "recovers"}
    prober.silent = {"black-hole"}
    calls = prober.calls.count("recovers")
    await wait_until(lambda: prober.calls.count("recovers") > calls and "recovers" not in scheduler.suspects)
    assert scheduler.suspects == {"black-hole"}
    scheduler.apply(brokers("healthy"))
    assert scheduler.suspects == set()  # a removed broker is forgotten
    await scheduler.stop()
