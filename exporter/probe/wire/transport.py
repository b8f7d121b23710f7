"""What MQTT bytes travel over: the TLS session itself (mqtts://) or WebSocket frames inside it (wss://).

Both are a ``Stream``: ``read()`` returns some bytes (b"" once the peer closed) and ``write()`` sends
some. The CONNECT/CONNACK exchange is written once against that. ``WebSocketStream`` is the thin I/O
around the pure codec of ``exporter.probe.wire.websocket``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from mqtt_cert_exporter import __version__
from mqtt_cert_exporter.probe.wire import websocket as ws
from mqtt_cert_exporter.probe.wire.http1 import HttpError, HttpResponse, head_length, parse_response_head
from mqtt_cert_exporter.probe.wire.tls import TlsClosed


class Stream(Protocol):
    async def read(self) -> bytes:
        """Some bytes; b"" when the peer closed."""
        ...

    async def write(self, data: bytes, *, flush: bool = True) -> None:
        """Send ``data``; ``flush=False`` may hold it back until the next write or the close."""
        ...


class WebSocketStream:
    """MQTT over WebSocket frames over another stream (the TLS session). Bound by the caller's timeout."""

    def __init__(self, inner: Stream, *, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._inner = inner
        self._random = random_bytes
        self._decoder = ws.FrameDecoder()
        self._pending: list[bytes] = []
        self._pongs: list[bytes] = []
        self._close_sent = False
        #: the upgrade response, once one was received (also when it was refused)
        self.response: HttpResponse | None = None
        self.subprotocol = ""
        #: set when the server sent a close frame: (code, reason)
        self.close_status: tuple[int | None, str] | None = None

    async def upgrade(self, *, host: str, port: int, path: str) -> None:
        """Ask for the WebSocket. Raises UpgradeRejected, WebSocketProtocolError or EOFError."""
        key = ws.handshake_key(self._random(16))
        await self._inner.write(
            ws.upgrade_request(
                host=host, port=port, path=path, key=key, user_agent=f"mqtt-cert-exporter/{__version__}"
            )
        )
        buffer = b""
        while True:
            try:
                length = head_length(buffer)
            except HttpError as exc:
                raise ws.WebSocketProtocolError(f"the answer to the upgrade is not HTTP: {exc}") from None
            if length is not None:
                break
            chunk = await self._inner.read()
            if not chunk:
                raise EOFError("the server closed the connection before answering the WebSocket upgrade")
            buffer += chunk
        try:
            self.response = parse_response_head(buffer[:length])
        except HttpError as exc:
            raise ws.WebSocketProtocolError(f"the answer to the upgrade is not HTTP: {exc}") from None
        self.subprotocol = ws.check_upgrade(self.response, key)
        self._take(buffer[length:])  # frames that came with the response

    def _take(self, data: bytes) -> None:
        """Decode: queue MQTT bytes and the pings to answer; note a close."""
        for event in self._decoder.feed(data):
            if isinstance(event, ws.Data):
                self._pending.append(event.payload)
            elif isinstance(event, ws.Ping):
                self._pongs.append(event.payload)
            elif isinstance(event, ws.Close):
                self.close_status = (event.code, event.reason)

    async def read(self) -> bytes:
        """MQTT bytes from the next data frame(s); b"" once the server closed (or the connection ended)."""
        while True:
            await self._answer_control_frames()
            if self._pending:
                data = b"".join(self._pending)
                self._pending.clear()
                return data
            if self.close_status is not None:
                return b""
            chunk = await self._inner.read()
            if not chunk:
                return b""
            self._take(chunk)

    async def _answer_control_frames(self) -> None:
        while self._pongs:
            await self._send(ws.OP_PONG, self._pongs.pop(0))
        if self.close_status is not None and not self._close_sent:
            self._close_sent = True
            code, _ = self.close_status
            try:
                await self._send(ws.OP_CLOSE, ws.close_payload(code) if code is not None else b"")
            except (TlsClosed, OSError):
                pass  # echoing a close is a courtesy; the peer may be gone

    async def write(self, data: bytes, *, flush: bool = True) -> None:
        await self._send(ws.OP_BINARY, data, flush=flush)

    async def _send(self, opcode: int, payload: bytes, *, flush: bool = True) -> None:
        await self._inner.write(ws.encode_frame(opcode, payload, mask=self._random(4)), flush=flush)
