"""The HTTP server around the app: where it listens, and how it holds up against hostile clients.

Listens on every ``--web.listen-address``, or on the sockets systemd passes (``--web.systemd-socket``).
aiohttp alone keeps a connection that trickles a request head or sends nothing for an hour, accepts
any number of them, and logs each malformed request with a traceback (issue 18.7, 18.8). Here, as Go's
``http.Server`` does with ``ReadHeaderTimeout``/``IdleTimeout``:

- a request head must arrive within ``HEADER_TIMEOUT`` of its first byte (of the connection, for a new one);
- a kept-alive connection may idle ``IDLE_TIMEOUT`` between requests;
- at most ``max_connections`` are open: one more closes the connection idle the longest (a request in
  progress is never cut), or, when every connection is busy, the newcomer. Slow or idle floods therefore
  cannot lock Prometheus out: its request head arrives right after its connect.
- a malformed request gets one short log line, without traceback or request bytes (they may hold
  credentials).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from mqtt_cert_exporter.web.app import parse_listen_address

#: Seconds from the first byte of a request (or a new connection) to the end of its head.
HEADER_TIMEOUT = 10.0
#: Seconds a kept-alive connection may wait for its next request (nginx's keepalive_timeout).
IDLE_TIMEOUT = 75.0
#: Open HTTP connections at most (--web.max-connections), unless the fd limit asks for fewer.
DEFAULT_MAX_CONNECTIONS = 256
#: systemd passes sockets from this descriptor on (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def default_max_connections() -> int:
    """DEFAULT_MAX_CONNECTIONS, or a quarter of the open-file limit when that is lower: the probes need
    descriptors too (at a limit of 1024, 1,000 held connections left none for them)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DEFAULT_MAX_CONNECTIONS
    return max(8, min(DEFAULT_MAX_CONNECTIONS, soft // 4))


@dataclass(eq=False)
class _State:
    transport: asyncio.BaseTransport | None = None
    busy: bool = False
    idle_since: float = 0.0
    head_timer: asyncio.TimerHandle | None = None

    def stop_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None


class _GuardedProtocol(asyncio.Protocol):
    """Between the transport and aiohttp's protocol: tells the guard when bytes arrive."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self.state = _State()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.state.transport = transport
        self._guard.opened(self)
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self._guard.received(self)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._guard.closed(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


@dataclass(eq=False)
class ConnectionGuard:
    """Header and idle timeouts and the connection cap (see the module docstring)."""

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout: float = HEADER_TIMEOUT
    #: connections closed to stay under the cap, and because a request head was too slow
    evicted: int = 0
    timed_out: int = 0
    _open: dict[asyncio.Protocol, _GuardedProtocol] = field(default_factory=dict)

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        return lambda: _GuardedProtocol(self, make())

    def opened(self, connection: _GuardedProtocol) -> None:
        loop = asyncio.get_running_loop()
        connection.state.idle_since = loop.time()
        self._open[connection._inner] = connection  # noqa: SLF001 - _GuardedProtocol is this module's own wrapper
        self._start_head_timer(connection)
        if len(self._open) > self.max_connections:
            idle = [other for other in self._open.values() if not other.state.busy]
            victim = min(idle, key=lambda other: other.state.idle_since) if idle else connection
            self.evicted += 1
            self._close(victim)

    def received(self, connection: _GuardedProtocol) -> None:
        if not connection.state.busy and connection.state.head_timer is None:
            self._start_head_timer(connection)

    def closed(self, connection: _GuardedProtocol) -> None:
        connection.state.stop_timer()
        self._open.pop(connection._inner, None)  # noqa: SLF001 - _GuardedProtocol is this module's own wrapper

    def _start_head_timer(self, connection: _GuardedProtocol) -> None:
        connection.state.head_timer = asyncio.get_running_loop().call_later(
            self.header_timeout, self._head_too_slow, connection
        )

    def _head_too_slow(self, connection: _GuardedProtocol) -> None:
        connection.state.head_timer = None
        if not connection.state.busy:
            self.timed_out += 1
            self._close(connection)

    def _close(self, connection: _GuardedProtocol) -> None:
        connection.state.stop_timer()
        self._open.pop(connection._inner, None)  # noqa: SLF001 - _GuardedProtocol is this module's own wrapper
        transport = connection.state.transport
        if isinstance(transport, asyncio.Transport):
            transport.abort()  # at once: a graceful TLS close would keep the descriptor for its timeout
        elif transport is not None:
            transport.close()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        connection = self._open.get(request.protocol)
        if connection is None:
            return await handler(request)
        connection.state.stop_timer()
        connection.state.busy = True
        try:
            return await handler(request)
        finally:
            connection.state.busy = False
            connection.state.idle_since = asyncio.get_running_loop().time()


class BadRequestLine(logging.Filter):
    """Turns aiohttp's traceback for a malformed request into one short line without request bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else ""
            record.msg, record.args = "bad HTTP request refused", ()
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.remote = str(remote)
            record.status = error.code
            record.error = describe(error)
        return True


def describe(error: HttpProcessingError) -> str:
    """What was wrong, in the parser's words, without the bytes it quotes (they may hold credentials)."""
    words: list[str] = []
    for line in (error.message or "").splitlines():
        if not line.strip():
            break
        words.append(line.strip())
    text = " ".join(words)
    for quote in ("b'", 'b"', "'", '"'):
        text = text.split(quote, 1)[0]
    return (text.strip() or type(error).__name__)[:120]


def quiet_bad_requests(logger: logging.Logger | None = None) -> None:
    """Install BadRequestLine on aiohttp's server logger (once)."""
    target = logger or logging.getLogger("aiohttp.server")
    if not any(isinstance(existing, BadRequestLine) for existing in target.filters):
        target.addFilter(BadRequestLine())


def systemd_sockets(environ: Mapping[str, str] | None = None, pid: int | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed (LISTEN_FDS/LISTEN_PID, sd_listen_fds(3)).

    ValueError says what is missing: run under a systemd .socket unit with ``Accept=no``.
    """
    environ = os.environ if environ is None else environ
    listen_pid, listen_fds = environ.get("LISTEN_PID", ""), environ.get("LISTEN_FDS", "")
    if not listen_pid or not listen_fds:
        raise ValueError(
            "--web.systemd-socket: no sockets passed (LISTEN_PID/LISTEN_FDS unset); start the exporter "
            "from a systemd .socket unit"
        )
    if listen_pid != str(os.getpid() if pid is None else pid):
        raise ValueError(f"--web.systemd-socket: the sockets are for process {listen_pid}, not this one")
    if not listen_fds.isdigit() or int(listen_fds) < 1:
        raise ValueError(f"--web.systemd-socket: LISTEN_FDS={listen_fds!r} is not a positive count")
    sockets = []
    for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(listen_fds)):
        sock = socket.socket(fileno=fd)
        if sock.type != socket.SOCK_STREAM or sock.family not in (
            socket.AF_INET,
            socket.AF_INET6,
            socket.AF_UNIX,
        ):
            raise ValueError(f"--web.systemd-socket: descriptor {fd} is not a stream socket")
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        sockets.append(sock)
    return sockets


class ListenError(OSError):
    """A listen address that cannot be bound (in use, not an address of this host): names it."""


@dataclass
class Listeners:
    """The listening servers and the URLs they answer on."""

    servers: list[asyncio.Server] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()


async def listen(
    factory: Callable[[], asyncio.Protocol],
    *,
    addresses: Sequence[str] = (),
    sockets: Sequence[socket.socket] = (),
    ssl_context: ssl.SSLContext | None = None,
    path: str = "/metrics",
) -> Listeners:
    """Serve ``factory``'s protocol on each address (``[host]:port``) and each passed socket."""
    loop = asyncio.get_running_loop()
    listeners = Listeners()
    # The guard sees a TLS connection once its handshake is done: the handshake gets its own deadline.
    handshake = HEADER_TIMEOUT if ssl_context else None
    try:
        for address in addresses:
            host, port = parse_listen_address(address)
            try:
                server = await loop.create_server(
                    factory, host, port, reuse_address=True, ssl=ssl_context, ssl_handshake_timeout=handshake
                )
            except OSError as exc:
                raise ListenError(exc.errno, f"cannot listen on {address}: {exc.strerror or exc}") from None
            listeners.servers.append(server)
        for sock in sockets:
            server = await loop.create_server(
                factory, sock=sock, ssl=ssl_context, ssl_handshake_timeout=handshake
            )
            listeners.servers.append(server)
    except BaseException:
        await listeners.close()
        raise
    scheme = "https" if ssl_context else "http"
    for server in listeners.servers:
        for sock in server.sockets:
            name = sock.getsockname()
            if isinstance(name, str):  # a Unix socket from systemd
                listeners.urls.append(f"unix:{name}{path}")
                continue
            shown = f"[{name[0]}]" if ":" in name[0] else name[0]
            listeners.urls.append(f"{scheme}://{shown}:{name[1]}{path}")
    return listeners
