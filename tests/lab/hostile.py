"""Small servers that misbehave in the ways Mosquitto will not: they stay silent, answer garbage,
complete TLS and then stall, reset... Each runs in a background thread with its own event loop so
synchronous tests, the benchmark and subprocesses can all use them. Loopback only.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
import struct
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.lab.pki import Issued, Pki

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _drain_forever(reader: asyncio.StreamReader) -> None:
    while await reader.read(65536):
        pass


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never says a word."""
    await _drain_forever(reader)


def garbage(payload: bytes = b"HTTP/1.1 400 Bad Request\r\n\r\n" * 4) -> Handler:
    """Answers whatever arrives with bytes that are not TLS."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        writer.write(payload)
        await writer.drain()
        await _drain_forever(reader)

    return handler


async def reset_on_accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Resets the connection as soon as it is accepted (SO_LINGER 0)."""
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def after_tls(reply: Callable[[bytes], bytes | None], *, close: bool = False) -> Handler:
    """For servers wrapped in TLS: reads the CONNECT, sends ``reply(connect)`` (None: nothing), then
    closes if ``close`` else stays silent."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connect = await reader.read(65536)
        answer = reply(connect)
        if answer:
            writer.write(answer)
            await writer.drain()
        if close:
            writer.close()
            return
        await _drain_forever(reader)

    return handler


def endless(chunk: bytes = b"\x20\x7f" + b"\xff" * 4096) -> Handler:
    """Answers CONNECT with an endless stream, until the client goes (at most 64 MiB)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        # Over TLS, writes to a connection the client has closed neither block nor fail (each logs
        # "socket.send() raised exception."), so drain() never yields: without the sleep this loop held
        # the lab's event loop for all 64 MiB, 16,000 warnings per probe, and starved its other servers.
        # Reading what the client sends meanwhile tells when it has gone.
        listening = asyncio.ensure_future(_drain_forever(reader))
        sent = 0
        try:
            while not listening.done() and sent < 64 << 20:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
                await asyncio.sleep(0)
        finally:
            listening.cancel()
            await asyncio.gather(listening, return_exceptions=True)  # its reset, if any, is retrieved

    return handler


@dataclass
class HostileServer:
    """One misbehaving TCP server (optionally TLS) on a loopback port, in a background thread."""

    handler: Handler
    cert: Path | None = None
    key: Path | None = None
    #: the server's OpenSSL cipher string ("DEFAULT:@SECLEVEL=0" lets it load weak keys)
    ciphers: str | None = None
    #: instead of cert and key (e.g. ``rotating_certificates``)
    context: ssl.SSLContext | None = None
    host: str = "127.0.0.1"
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _server: asyncio.Server | None = field(default=None, init=False)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def start(self) -> HostileServer:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            context = self.context
            if self.cert is not None:
                context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                if self.ciphers:
                    context.set_ciphers(self.ciphers)
                context.load_cert_chain(self.cert, self.key)
            self._server = await asyncio.start_server(self._guarded, self.host, self.port, ssl=context)
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"hostile:{self.handler}", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("hostile server did not start")
        return self

    async def _guarded(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # CancelledError too: stop() cancels handlers, and a cancelled connection task makes asyncio's
        # stream callback print a traceback.
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError, asyncio.CancelledError):
            await self.handler(reader, writer)
        with contextlib.suppress(OSError, ssl.SSLError, RuntimeError):
            writer.close()

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        with contextlib.suppress(TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None


class BlackHole:
    """A port where TCP connect never completes: a listening socket whose accept queue is full and
    never drained, so the kernel drops further SYNs (a firewall that DROPs, on loopback)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind((host, 0))
        self._listener.listen(0)
        self.host = host
        self.port = self._listener.getsockname()[1]
        self._fillers: list[socket.socket] = []
        # With backlog 0 the queue holds one connection; fill it (and one more in SYN-RECV state).
        for _ in range(2):
            filler = socket.socket(self._listener.family, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((host, self.port))
            self._fillers.append(filler)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def close(self) -> None:
        for sock in [*self._fillers, self._listener]:
            sock.close()


def slow_bytes(payload: bytes = b"\x16\x03\x03\x00\x40" + b"\x02" * 64, interval: float = 1.0) -> Handler:
    """Speaks (something that starts like) TLS slower than a byte per second."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)
        for byte in payload:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(interval)
        await _drain_forever(reader)

    return handler


async def reset_mid_handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the ClientHello, sends the start of a ServerHello record, then resets."""
    await reader.read(65536)
    writer.write(b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03")
    await writer.drain()
    await asyncio.sleep(0.05)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def rotating_certificates(pki: Pki, issuer: Issued, chain_file: Path) -> ssl.SSLContext:
    """A server context that presents a new leaf (issued by ``issuer``, sent with ``chain_file``) on
    every connection that names a server (SNI): a broker rotating its certificate as fast as it can.
    The leaves are made on the server's thread as clients connect, written under ``pki``'s directory."""
    count = itertools.count()

    def fresh(ssl_object: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        leaf = pki.leaf(f"rotating-{next(count)}", issuer, dns_names=(server_name or "localhost",))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        bundle = leaf.cert_path.with_suffix(".chain.pem")
        bundle.write_bytes(leaf.cert_path.read_bytes() + chain_file.read_bytes())
        context.load_cert_chain(bundle, leaf.key_path)
        ssl_object.context = context
        for path in (bundle, leaf.cert_path, leaf.key_path):
            path.unlink()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    first = pki.leaf("rotating-first", issuer)
    context.load_cert_chain(first.cert_path, first.key_path)
    context.sni_callback = fresh
    return context


@contextmanager
def rotating_broker(
    directory: Path, issuer: Issued, chain_file: Path, *, ca_file: Path, connack: bytes
) -> Iterator[BrokerConfig]:
    """A broker that presents a new leaf of ``issuer`` on every connection (``rotating_certificates``),
    answers a CONNECT with ``connack`` and closes; probed against ``ca_file``."""
    context = rotating_certificates(Pki(directory), issuer, chain_file)
    server = HostileServer(after_tls(lambda _: connack, close=True), context=context).start()
    try:
        yield BrokerConfig(
            "rotating",
            Target("127.0.0.1", server.port),
            timeout=5,
            tls=TlsSettings(ca_file=str(ca_file), server_name="localhost"),
        )
    finally:
        server.stop()
