"""Memory housekeeping of the daemon: keep the garbage collector's passes off the event loop, and hand
the heap's free pages back to the operating system now and then.

Every probe allocates and frees OpenSSL's connection buffers and a handful of Python objects between
results that live on. glibc returns freed memory only from the top of the heap, so pages freed among
long-lived objects stay in the process. ``malloc_trim(0)`` releases them. Measured in-process with
2000 brokers after the first sweep: RSS 135 -> 98 MB in 10 ms, then ~2 ms per call a minute later;
without it RSS stays at the first sweep's peak (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
from collections.abc import Callable
from functools import cache

from mqtt_cert_exporter import logs

log = logs.get_logger(__name__)

#: How often the daemon trims: the cost is a few ms per call, the memory it returns builds up over a sweep.
TRIM_INTERVAL = 60.0


#: Young-generation threshold: a probe leaves no cyclic garbage behind (tests/test_connection.py), so
#: the collector's passes find nothing and only cost time. Python's default (700) ran ~280 passes a
#: minute at 3000 brokers, promoting in-flight probes' objects until a full pass over every result
#: (~150 ms at 5000 brokers, on the event loop) ran every 15 s; with 10,000, none ran in a minute.
GC_THRESHOLD_YOUNG = 10_000


def tune_garbage_collector() -> None:
    """Call once, before probing starts. Moves everything alive now (modules, the loaded configuration)
    into the collector's permanent generation, out of every future pass (what is frozen is never
    collected as a cycle), and makes passes rarer (``GC_THRESHOLD_YOUNG``)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_YOUNG, middle, old)


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None on a C library without it (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        function = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim() -> bool:
    """Release the heap's free pages; False when this C library cannot."""
    function = _malloc_trim()
    if function is None:
        return False
    function(0)
    return True


async def trim_periodically(interval: float = TRIM_INTERVAL) -> None:
    """Trim every ``interval`` seconds until cancelled (a no-op loop where trimming is not available)."""
    if _malloc_trim() is None:
        log.debug("malloc_trim is not available: freed heap memory stays with the process")
        return
    while True:
        await asyncio.sleep(interval)
        trim()
