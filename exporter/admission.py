"""Which probes may run now: a TCP connect in progress costs a file descriptor and no CPU, the rest of a
probe (TLS, chain, MQTT) costs CPU. So a probe passes three bounded budgets (issue 16):

* a **connect permit** from its start until it holds a slot: TCP connects in progress, and connected
  probes waiting for a slot. Bounded by what the open-file limit leaves (``connect_limit``), so a fleet's
  black holes (whose connect never completes) all wait out their timeouts at once without holding the
  CPU-bearing slots, and descriptors stay bounded;
* a **slot** (``--probe.concurrency``) once TCP is connected: the CPU-bearing part;
* a **pipeline permit** (twice the slots) from its start until it ends, given back early when its connect
  is still in progress after ``CONNECT_GRACE`` (likely a black hole). It keeps the connected probes that
  wait for a slot few: brokers close a connection that sends no ClientHello for long (RabbitMQ after 5 s),
  so a first sweep must not connect to 10,000 brokers at once and leave them waiting for the CPU.

Every budget is fair (issue 18.13): brokers whose last probe timed out (suspects) never hold the last
quarter of one, and a freed place goes to a healthy broker first. A suspect waits, a healthy broker does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType

#: 1/HEALTHY_RESERVE of each budget never holds a broker whose last probe timed out.
HEALTHY_RESERVE = 4
#: Seconds after which a connect still in progress gives its pipeline permit back. Longer than a
#: connect takes on any network (a lost SYN is sent again after Linux's initial 1 s RTO).
CONNECT_GRACE = 1.0
#: Pipeline permits per slot: probes connecting or connected, at most this many times the slots.
PIPELINE_PER_SLOT = 2
#: Descriptors a probe in a slot may hold at once (its connection and the one learning the MQTT version).
DESCRIPTORS_PER_SLOT = 2
#: Descriptors kept for everything else: listening sockets, the epoll fd, log and CA files, AIA/CRL fetches.
DESCRIPTORS_RESERVED = 64


def connect_limit(concurrency: int, other_descriptors: int, open_files: int | None = None) -> int:
    """Connect permits: the open-file limit less what the slots, the HTTP connections
    (``other_descriptors``) and the reserve may hold; never fewer than the slots."""
    if open_files is None:
        open_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if open_files == resource.RLIM_INFINITY:
        open_files = 1 << 20
    spare = open_files - DESCRIPTORS_RESERVED - other_descriptors - DESCRIPTORS_PER_SLOT * concurrency
    return max(concurrency, spare)


class SlotBudget:
    """At most ``size`` holders at once. Suspects (brokers whose last probe timed out) may hold all but a
    quarter, which stays for the others; and a freed place goes to a waiting healthy broker before any
    suspect. Healthy probes hold a place briefly, so the reserve serves them without a queue, while
    suspects still get every place the others leave unused."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._suspect_limit = max(1, size - size // HEALTHY_RESERVE)
        self._suspects = 0
        self._waiting: dict[bool, deque[asyncio.Future[None]]] = {False: deque(), True: deque()}

    @property
    def held(self) -> int:
        return self.size - self._free

    @contextlib.asynccontextmanager
    async def slot(self, *, suspect: bool) -> AsyncIterator[None]:
        await self.acquire(suspect)
        try:
            yield
        finally:
            self.release(suspect)

    def _may_take(self, suspect: bool) -> bool:
        return self._free > 0 and (not suspect or self._suspects < self._suspect_limit)

    def _take(self, suspect: bool) -> None:
        self._free -= 1
        self._suspects += suspect

    def try_acquire(self, suspect: bool) -> bool:
        """Take a place if one is free for this kind of broker and none of its kind waits for one."""
        if self._may_take(suspect) and not self._waiting[suspect]:
            self._take(suspect)
            return True
        return False

    async def acquire(self, suspect: bool) -> None:
        if self.try_acquire(suspect):
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting[suspect].append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(suspect)  # granted, then cancelled before it could run
            raise

    def release(self, suspect: bool) -> None:
        self._free += 1
        self._suspects -= suspect
        for waiting_suspect in (False, True):  # the healthy first
            queue = self._waiting[waiting_suspect]
            while queue and self._may_take(waiting_suspect):
                granted = queue.popleft()
                if not granted.done():  # else cancelled while waiting
                    self._take(waiting_suspect)
                    granted.set_result(None)


class Budgets:
    """The three budgets of one scheduler; ``admission`` is one probe's way through them."""

    def __init__(self, concurrency: int, connects: int) -> None:
        self.slots = SlotBudget(concurrency)
        self.connects = SlotBudget(max(1, connects))
        self.pipeline = SlotBudget(PIPELINE_PER_SLOT * concurrency)

    @property
    def connecting(self) -> int:
        """Probes connecting, or connected and waiting for a slot."""
        return self.connects.held

    def admission(self, *, suspect: bool) -> Admission:
        return Admission(self, suspect)


class Admission:
    """One probe (of one broker: all its addresses) from its start to its end. ``admit`` is what the
    prober awaits once TCP is connected, before any CPU-bearing step; a probe that never connects
    (refused, unreachable, a black hole) never takes a slot."""

    def __init__(self, budgets: Budgets, suspect: bool) -> None:
        self._budgets = budgets
        self._suspect = suspect
        self._admitted = False
        self._in_pipeline = False
        self._grace: asyncio.TimerHandle | None = None
        self._lock: asyncio.Lock | None = None

    async def __aenter__(self) -> Admission:
        budgets, suspect = self._budgets, self._suspect
        # try_acquire first: most probes find a free place, and need no coroutine to take it
        if not budgets.pipeline.try_acquire(suspect):
            await budgets.pipeline.acquire(suspect)
        try:
            if not budgets.connects.try_acquire(suspect):
                await budgets.connects.acquire(suspect)
        except BaseException:
            budgets.pipeline.release(suspect)
            raise
        self._in_pipeline = True
        self._grace = asyncio.get_running_loop().call_later(CONNECT_GRACE, self._leave_pipeline)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._admitted:
            self._budgets.slots.release(self._suspect)
        else:
            self._budgets.connects.release(self._suspect)
        self._leave_pipeline()

    def _leave_pipeline(self) -> None:
        if self._grace is not None:
            self._grace.cancel()
            self._grace = None
        if self._in_pipeline:
            self._in_pipeline = False
            self._budgets.pipeline.release(self._suspect)

    async def admit(self) -> None:
        """Wait for a slot (once per probe, whichever of its addresses connects first)."""
        if self._admitted:
            return
        if self._grace is not None:  # connected in time: it stays in the pipeline until it ends
            self._grace.cancel()
            self._grace = None
        if self._lock is None and self._budgets.slots.try_acquire(self._suspect):
            # no other address of this probe is waiting for a slot (it would have made the lock), and
            # taking a free one does not wait: nothing can come in between
            self._admitted = True
            self._budgets.connects.release(self._suspect)
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._admitted:
                return
            await self._budgets.slots.acquire(self._suspect)
            self._admitted = True
            self._budgets.connects.release(self._suspect)
