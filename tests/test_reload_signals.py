"""SIGHUP coalesced, SIGTERM never waits for a reload (issue 18.12)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from mqtt_cert_exporter.coalesce import Coalesced, in_daemon_thread
from tests.conftest import Lab, start_exporter


async def test_a_burst_of_requests_runs_once_more_after_the_run_in_progress() -> None:
    started = asyncio.Event()
    release = asyncio.Event()

    async def reload() -> None:
        started.set()
        await release.wait()

    reloads = Coalesced(reload)
    for _ in range(1000):
        reloads.request()
    await started.wait()
    assert reloads.runs == 1
    started.clear()
    for _ in range(1000):  # while the first runs: one more is queued, the rest join it
        reloads.request()
    release.set()
    await reloads.idle()
    assert reloads.runs == 2


async def test_a_failing_run_does_not_stop_later_ones() -> None:
    calls = []

    async def reload() -> None:
        calls.append(1)
        raise RuntimeError("broken")

    reloads = Coalesced(reload)
    reloads.request()
    await reloads.idle()
    reloads.request()
    await reloads.idle()
    assert calls == [1, 1]


async def test_work_in_a_daemon_thread_returns_its_result_or_raises() -> None:
    assert await in_daemon_thread(lambda: 6 * 7) == 42
    with pytest.raises(ZeroDivisionError):
        await in_daemon_thread(lambda: 1 / 0)


@pytest.mark.slow
def test_a_thousand_sighups_and_sigterm_during_a_reload_that_never_ends(lab: Lab, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(config, tmp_path)
    try:
        for _ in range(1000):
            os.kill(process.process.pid, signal.SIGHUP)
        assert "mqtt_broker_probe_success" in process.get("/metrics")
        # A config file that blocks whoever reads it (a FIFO nobody writes): the reload never ends.
        config.unlink()
        os.mkfifo(config)
        os.kill(process.process.pid, signal.SIGHUP)
        assert "mqtt_broker_probe_success" in process.get("/metrics")  # scrapes go on meanwhile
        process.process.send_signal(signal.SIGTERM)
        assert process.process.wait(30) == 0
        assert "shutting down" in process.log()
    finally:
        process.stop()
