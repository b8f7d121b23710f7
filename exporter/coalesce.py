"""Jobs that must not pile up: SIGHUP reloads (issue 18.12), and blocking work that must not hold exit.

1,000 SIGHUPs used to start 1,000 reloads, each a full re-parse on the event loop (scrapes stalled up
to 9.3 s), and a SIGTERM waited for the reload in progress. Here a burst of requests runs the job at most
once more after the run in progress, and the parse runs in a daemon thread that exit does not wait for.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Awaitable, Callable
from typing import TypeVar

from mqtt_cert_exporter import logs

T = TypeVar("T")
log = logs.get_logger("mqtt_cert_exporter")


class Coalesced:
    """Runs ``job`` on request: at most one run in progress and one queued behind it, whatever the
    number of requests. Requests made while a run waits to start join that run."""

    def __init__(self, job: Callable[[], Awaitable[object]]) -> None:
        self._job = job
        self._lock = asyncio.Lock()
        self._queued = False
        self._tasks: set[asyncio.Task[None]] = set()
        #: runs started so far
        self.runs = 0

    def request(self) -> None:
        if self._queued:
            return
        self._queued = True
        task = asyncio.get_running_loop().create_task(self._run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        async with self._lock:
            self._queued = False
            self.runs += 1
            try:
                await self._job()
            except Exception:  # a bug in the job must not end the process or block later runs
                log.exception("a coalesced job failed")

    async def idle(self) -> None:
        """Wait until every requested run has finished."""
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def cancel(self) -> None:
        for task in self._tasks:
            task.cancel()


async def in_daemon_thread(function: Callable[[], T]) -> T:
    """``function()`` in a thread of its own that does not keep the process alive at exit (unlike
    ``asyncio.to_thread``, whose pool is joined at shutdown): a SIGTERM never waits for it."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(outcome: Callable[[], None]) -> None:
        try:
            loop.call_soon_threadsafe(outcome)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting any more
            pass

    def settle_result(value: T) -> None:
        if not future.done():
            future.set_result(value)

    def settle_error(error: BaseException) -> None:
        if not future.done():
            future.set_exception(error)

    def work() -> None:
        try:
            value = function()
        except BaseException as error:  # handed to the awaiting task, which decides
            deliver(functools.partial(settle_error, error))
        else:
            deliver(functools.partial(settle_result, value))

    threading.Thread(target=work, name="daemon-work", daemon=True).start()
    return await future
