"""Admission (issue 16): black holes wait out their timeouts beside the CPU-bearing slots, not in them.

Real Mosquitto (the lab's ``good`` listener) and real TCP black holes (``tests.lab.hostile.BlackHole``:
a connect never completes), through the real scheduler and prober. Only orderings and bounds are
asserted, never durations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from typing import TypeVar

from mqtt_cert_exporter.admission import PIPELINE_PER_SLOT, Budgets
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import ProbeResult, Reason, Stage
from mqtt_cert_exporter.scheduler import Scheduler
from mqtt_cert_exporter.store import ResultStore
from tests.conftest import Lab
from tests.lab.hostile import BlackHole

T = TypeVar("T")


def fleet(lab: Lab, *, good: int, holes: int, timeout: float) -> tuple[list[BrokerConfig], BlackHole]:
    """Black holes first in the configuration (the worst order for the good brokers), then good ones."""
    hole = BlackHole()
    template = dataclasses.replace(lab.broker("good"), timeout=timeout, interval=3600)
    brokers = [
        dataclasses.replace(template, name=f"hole-{i}", target=Target(hole.host, hole.port))
        for i in range(holes)
    ]
    brokers += [dataclasses.replace(template, name=f"good-{i}") for i in range(good)]
    return brokers, hole


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def sweep(
    brokers: list[BrokerConfig], sample: Callable[[Scheduler], T], **budgets: int
) -> tuple[list[ProbeResult], list[T]]:
    """One first sweep: the results in the order they were published, and ``sample`` of the scheduler
    taken every 20 ms meanwhile."""
    arrived: list[ProbeResult] = []
    samples: list[T] = []
    done = asyncio.Event()

    def on_result(result: ProbeResult, _: ProbeResult | None) -> None:
        arrived.append(result)
        if len(arrived) == len(brokers):
            done.set()

    scheduler = Scheduler(Prober(), ResultStore(), on_result=on_result, **budgets)

    async def watch() -> None:
        while True:
            samples.append(sample(scheduler))
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch())
    scheduler.apply(brokers)
    try:
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        watcher.cancel()
        await scheduler.stop()
    return arrived, samples


async def test_good_brokers_are_not_held_up_by_more_black_holes_than_slots(lab: Lab) -> None:
    slots, holes = 4, 12  # 3x the slots, more than the pipeline (8): before issue 16, 3 rounds of timeouts
    brokers, hole = fleet(lab, good=8, holes=holes, timeout=4.0)
    try:
        arrived, connecting = await sweep(brokers, lambda s: s.budgets.connecting, concurrency=slots)
    finally:
        hole.close()
    order = [result.broker for result in arrived]
    first_hole = min(index for index, name in enumerate(order) if name.startswith("hole"))
    assert all(name.startswith("good") for name in order[:first_hole]) and first_hole == 8, order
    assert all(result.success for result in arrived[:first_hole])
    for result in arrived[first_hole:]:
        assert result.failure is not None
        assert (result.failure.stage, result.failure.reason) == (Stage.CONNECT, Reason.TIMEOUT)
    assert max(connecting) > PIPELINE_PER_SLOT * slots  # stale connects made room for others


async def test_descriptors_stay_bounded_by_the_connect_limit(lab: Lab) -> None:
    connects, holes = 5, 12  # more than the pipeline's 4: stale connects (after 1 s) make room
    brokers, hole = fleet(lab, good=4, holes=holes, timeout=2.0)
    before = open_descriptors()
    try:
        arrived, seen = await sweep(
            brokers,
            lambda s: (s.budgets.connecting, open_descriptors() - before),
            concurrency=2,
            connects=connects,
        )
    finally:
        hole.close()
    assert max(permits for permits, _ in seen) == connects  # used to the full, never beyond
    # connects in progress, plus at most two connections per slot
    assert max(descriptors for _, descriptors in seen) <= connects + 2 * 2
    assert sum(result.success for result in arrived) == 4
    assert sum(not result.success for result in arrived) == holes


async def test_the_wait_for_a_slot_does_not_count_against_the_timeout(lab: Lab) -> None:
    """An exporter short of slots must not report its own queue as the broker's timeout."""
    budgets = Budgets(concurrency=1, connects=4)
    broker = dataclasses.replace(lab.broker("good"), timeout=1.0)
    await budgets.slots.acquire(False)  # every slot taken, for longer than the broker's timeout
    async with budgets.admission(suspect=False) as admission:
        probe = asyncio.create_task(Prober().probe(broker, admission.admit))
        await asyncio.sleep(1.5)
        assert not probe.done() and budgets.connecting == 1  # connected, waiting for the slot
        budgets.slots.release(False)
        result = await probe
    assert result.success, result.failure


async def test_a_probe_of_several_addresses_takes_one_slot() -> None:
    budgets = Budgets(concurrency=1, connects=4)
    async with budgets.admission(suspect=False) as admission:
        await asyncio.gather(admission.admit(), admission.admit(), admission.admit())
        assert budgets.slots.held == 1 and budgets.connecting == 0
    assert budgets.slots.held == 0 and budgets.pipeline.held == 0
