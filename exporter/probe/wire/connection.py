"""A TCP connection as a probe uses it: a few small writes, bytes read as they arrive, then close.

asyncio's streams put a StreamReader, a StreamReaderProtocol and a StreamWriter between the socket
and us, with flow control a probe never needs (it sends a few KB). This protocol keeps what arrived
and wakes the one waiting reader: less work per read on every probe (docs/performance.md).

A probe's deadline is the connection's (``expire_at``): one timer for all the phases on it, not an
``asyncio.timeout`` per phase (each a context object, a timer and a task cancellation to undo).
"""

from __future__ import annotations

import asyncio
import errno
import time
from typing import cast


class Connection(asyncio.Protocol):
    """Bytes in, bytes out. ``read`` raises the error that ended the connection (e.g. a reset)."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._chunks: list[bytes] = []
        self._size = 0
        self._ended = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._expired = False

    # -- asyncio.Protocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        self._wake()

    def eof_received(self) -> bool:
        self._ended = True
        self._wake()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None  # no cycle with the transport: freed as soon as the probe lets go
        self._ended = True
        self._stop_timer()
        if exc is not None and self._error is None:
            self._error = exc
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _expire(self) -> None:
        self._timer = None
        self._expired = True
        self._wake()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # -- for the probe --------------------------------------------------------------------------
    def expire_at(self, deadline: float) -> None:
        """From ``deadline`` on (``time.monotonic()``), a read that would wait raises TimeoutError, like
        one under ``asyncio.timeout`` (bytes that already arrived are still returned)."""
        self._stop_timer()
        delay = max(0.0, deadline - time.monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self, limit: int) -> bytes:
        """At most ``limit`` bytes, as soon as there are any; b"" once the peer closed."""
        while not self._size:
            if self._error is not None:
                raise self._error
            if self._ended:
                return b""
            if self._expired:
                raise TimeoutError("the probe's deadline passed")
            await self._wait()
        data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        if len(data) > limit:
            rest = data[limit:]
            self._chunks.append(rest)
            self._size = len(rest)
            data = data[:limit]
        return data

    async def readexactly(self, count: int) -> bytes:
        """Exactly ``count`` bytes; asyncio.IncompleteReadError when the peer closes before."""
        data = b""
        while len(data) < count:
            chunk = await self.read(count - len(data))
            if not chunk:
                raise asyncio.IncompleteReadError(data, count)
            data += chunk
        return data

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            raise self._error or ConnectionResetError("the connection is closed")
        self._transport.write(data)

    def close(self) -> None:
        self._stop_timer()
        if self._transport is not None:
            self._transport.close()


#: errno values that say the exporter, not the network, ran out of something.
_OWN_LIMITS = frozenset({errno.EMFILE, errno.ENFILE})


class DescriptorsExhausted(Exception):
    """The exporter ran out of file descriptors: its own problem, never a broker's (issue 18.13)."""


class _Tally:
    def __init__(self) -> None:
        self.count = 0


#: connects refused by the exporter's own fd limit since start (mqtt_cert_exporter_fd_exhaustion_total)
FD_EXHAUSTION = _Tally()


async def connect(host: str, port: int) -> Connection:
    """TCP to ``host`` (an IP or a name). Raises OSError as ``asyncio.open_connection`` does, and
    DescriptorsExhausted (not an OSError) when the exporter is out of file descriptors.

    Both asyncio and uvloop turn Nagle off on TCP transports (TLS 1.3's CONNECT would otherwise wait
    for a delayed ACK).
    """
    try:
        _, connection = await asyncio.get_running_loop().create_connection(Connection, host, port)
    except OSError as exc:
        if exc.errno not in _OWN_LIMITS:
            raise
        FD_EXHAUSTION.count += 1
        raise DescriptorsExhausted(f"the exporter is out of file descriptors: {exc.strerror}") from None
    return connection
