"""The event loop every command runs on: uvloop (libuv, in C) when it is installed, else asyncio's own.

A probe is mostly event-loop work -- a TCP connect, a few socket reads and writes, timers -- around one
TLS handshake. asyncio's selector loop does that work in Python (selector registration, callbacks,
transports); uvloop does it in C. Measured with `python -m bench.compare`: see docs/performance.md.
Nothing in the exporter depends on which loop runs it; the suite runs on the same loop as the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when uvloop is importable, else None (asyncio's default loop)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def running_name() -> str:
    """The running loop's implementation, for the start-up log line: "uvloop" or "asyncio"."""
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on the exporter's event loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
