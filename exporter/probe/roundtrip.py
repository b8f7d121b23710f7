"""The optional round trip (``mqtt.roundtrip``): subscribe, publish, and receive our own message back.

It catches brokers that accept connections but do not route messages (ACLs, broken bridges, a full
disk). This is where a full MQTT client earns its place: aiomqtt (paho-mqtt underneath) does the
SUBSCRIBE/PUBLISH/PUBACK dance. paho connects in a worker thread, so this runs only for brokers that
ask for it, never on the handshake path.

The client is built through aiomqtt's public constructor (TLS context, protocol, WebSocket path and
headers, credentials, keepalive) and driven through its public API (``subscribe``, ``publish``,
``messages``, ``__aenter__``/``__aexit__``). Four things have no public API in aiomqtt 2.5 / paho-mqtt
2.2, so this module reaches paho's client (``aiomqtt.Client._client``) for exactly these, all in
``_paho_hooks`` (pinned by ``aiomqtt>=2.5,<3``):

1. **Connecting to one address under another name.** paho uses the host given to ``connect`` both for
   the TCP connect and as the server name (SNI, hostname check, WebSocket ``Host``); neither aiomqtt nor
   paho takes a separate address or a socket factory. The probe must reach *the address being probed*
   (``addresses: all``, ``ip_protocol``), possibly through ``proxy_url`` with the probe's own SOCKS5 /
   HTTP CONNECT dialogues (aiomqtt's ``proxy=`` needs PySocks and cannot express ours): paho's private
   ``_create_socket_connection`` is replaced by ``_Connector.connect``. Missing: a ``sock=`` or
   ``socket_factory=`` argument to ``aiomqtt.Client``/``paho.Client.connect`` (or a ``server_hostname``).
2. **The PUBACK reason code.** ``aiomqtt.Client.publish`` drops it; MQTT 5 brokers answer an ACL-denied
   publish with 0x87. paho's public ``on_publish`` callback is wrapped. Missing: ``publish`` returning
   (or raising on) the PUBACK reason code.
3. **A connect timeout.** paho's public ``connect_timeout`` (TCP + TLS in paho's worker thread) is set;
   aiomqtt's ``timeout`` does not reach it. Missing: an aiomqtt ``connect_timeout`` argument.
4. **Abandoning a connection.** A deadline that cancels ``__aenter__`` leaves paho connecting in a
   worker thread; the socket it opens later would be registered with the loop and leak. paho's public
   ``on_socket_open`` is wrapped to close such a socket, every socket we opened is shut down, and
   paho's private ``_sock_close`` unregisters aiomqtt's reader and ends its misc task. Missing: an
   aiomqtt ``abort()`` (or cancellation of ``__aenter__`` that winds paho down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import aiomqtt
from aiomqtt import MqttError
from aiomqtt.exceptions import MqttConnectError

from mqtt_cert_exporter import logs
from mqtt_cert_exporter.config import BrokerConfig, ProxySettings, RoundtripSettings
from mqtt_cert_exporter.probe.wire.proxy import ProxyError, dialogue, tunnel_blocking
from mqtt_cert_exporter.probe.wire.websocket import host_header
from mqtt_cert_exporter.results import Failure, Reason, RoundtripFacts, Stage

log = logs.get_logger(__name__)
_PAHO_LOG = logging.getLogger("mqtt_cert_exporter.probe.roundtrip.paho")

#: CONNACK codes that mean "you may not" (3.1.1: 4 bad credentials, 5 not authorized; 5: 0x86, 0x87).
_NOT_AUTHORIZED = frozenset({4, 5, 0x86, 0x87})
#: How long a graceful DISCONNECT may take once the round trip is over.
DISCONNECT_WAIT = 0.5


class _Denied(Exception):
    pass


class _Connector:
    """paho's socket factory: TCP to the probed address, through the proxy when there is one.

    Runs in paho's worker thread. Keeps every socket it made so the event loop can shut them down.
    """

    def __init__(self, host: str, port: int, proxy: ProxySettings | None, timeout: float) -> None:
        self._host, self._port, self._proxy, self._timeout = host, port, proxy, timeout
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.abandoned = False

    def connect(self) -> socket.socket:
        proxy = self._proxy
        if proxy is None:
            sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
        else:
            sock = socket.create_connection((proxy.host, proxy.port), timeout=self._timeout)
            try:
                tunnel_blocking(sock, dialogue(proxy, self._host, self._port))
            except ProxyError as exc:
                sock.close()
                raise OSError(f"proxy {proxy}: {exc}") from exc
            except OSError:
                sock.close()
                raise
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            if self.abandoned:
                sock.close()
                raise OSError("the round trip was abandoned")
            self._sockets.append(sock)
        return sock

    def shutdown(self) -> None:
        """Called from the event loop: end every connection, so paho and aiomqtt wind down."""
        with self._lock:
            self.abandoned = True
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


async def run_roundtrip(
    broker: BrokerConfig, *, ip: str | None, context: ssl.SSLContext, budget: float, unverified: bool
) -> RoundtripFacts:
    """Subscribe to the topic, publish a unique token, wait for it. Never raises; the facts say why."""
    settings = broker.mqtt.roundtrip
    assert settings is not None
    if settings.timeout is not None:
        budget = min(budget, settings.timeout)
    budget = max(budget, 0.001)
    connector = _Connector(ip or broker.target.host, broker.target.port, broker.proxy, budget)
    client = _client(broker, context, budget)
    refusals, abandon = _paho_hooks(client, connector, budget)
    progress = _Progress()
    try:
        async with asyncio.timeout(budget):
            latency = await _exchange(client, settings, refusals, progress)
    except TimeoutError:
        return _failed(
            Reason.TIMEOUT, f"round trip: no answer {progress.step} within {budget:g}s", unverified
        )
    except _Denied as exc:
        return _failed(Reason.DENIED, str(exc), unverified)
    except _Dropped:
        # MQTT 3.1.1 lets a broker close the connection instead of refusing a SUBSCRIBE or PUBLISH
        # with a code, and brokers do (RabbitMQ): an ACL answer, not an outage
        detail = (
            f"the broker closed the connection {progress.step} for {settings.topic!r}: it does not allow it"
        )
        return _failed(Reason.DENIED, f"round trip: {detail}", unverified)
    except MqttConnectError as exc:
        code = _code(exc.rc)
        reason = Reason.DENIED if code in _NOT_AUTHORIZED else Reason.ERROR
        return _failed(reason, f"round trip: the broker refused the connection: {exc}", unverified)
    except MqttError as exc:
        cause = exc.__cause__ or exc.__context__
        detail = f"{exc}" + (f" ({cause})" if cause is not None and str(cause) not in str(exc) else "")
        return _failed(Reason.ERROR, f"round trip, {progress.step}: {detail}", unverified)
    except (OSError, ValueError) as exc:  # paho raising outside aiomqtt's wrapping
        return _failed(Reason.ERROR, f"round trip, {progress.step}: {exc}", unverified)
    finally:
        if progress.connected:
            with contextlib.suppress(MqttError, TimeoutError, OSError):
                async with asyncio.timeout(DISCONNECT_WAIT):
                    await client.__aexit__(None, None, None)
            _retrieve(client._disconnected)  # noqa: SLF001 - aiomqtt has no public "connection lost" future
        connector.shutdown()
        await asyncio.sleep(0)  # let callbacks paho's thread already queued (socket registration) run
        abandon()
    if latency is None:
        return _failed(Reason.ERROR, "round trip: the message stream ended without our message", unverified)
    return RoundtripFacts(success=True, latency=latency, unverified_connection=unverified)


class _Dropped(Exception):
    """The broker closed the connection while we waited for its answer."""


_T = TypeVar("_T")


async def _answer(client: aiomqtt.Client, waiting: Awaitable[_T]) -> _T:
    """``waiting``, unless the broker drops the connection first: aiomqtt leaves a pending SUBACK or
    PUBACK waiting until the deadline then (RabbitMQ closes the connection on a forbidden SUBSCRIBE)."""
    task = asyncio.ensure_future(waiting)
    dropped = client._disconnected  # noqa: SLF001 - aiomqtt has no public "connection lost" future
    try:
        await asyncio.wait((task, dropped), return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, MqttError):
                await task
    if task.done() and not task.cancelled():
        return task.result()
    raise _Dropped


def _retrieve(future: asyncio.Future[None]) -> None:
    """Take a lost connection's exception, which we classified: asyncio would log it at error level
    ("Future exception was never retrieved ... Unexpected disconnection") when the client is freed."""
    if future.done() and not future.cancelled():
        future.exception()


@dataclass
class _Progress:
    """How far the round trip got, for the failure's detail and the clean-up."""

    step: str = "connecting"
    connected: bool = False


def _client(broker: BrokerConfig, context: ssl.SSLContext, budget: float) -> aiomqtt.Client:
    server_name = broker.server_name.strip("[]")
    port = broker.target.port
    wss = broker.target.scheme == "wss"
    return aiomqtt.Client(
        server_name,
        port,
        username=broker.mqtt.username,
        password=broker.mqtt.password.reveal() if broker.mqtt.password else None,
        identifier=broker.mqtt.client_id or f"mqtt-cert-exporter-rt-{uuid.uuid4().hex[:12]}",
        protocol=aiomqtt.ProtocolVersion.V5 if broker.mqtt.protocol == "5" else aiomqtt.ProtocolVersion.V311,
        transport="websockets" if wss else "tcp",
        websocket_path=broker.target.path if wss else None,
        websocket_headers={"Host": host_header(server_name, port)} if wss else None,
        tls_context=context,
        keepalive=max(broker.mqtt.keepalive, 1),
        timeout=budget + 1,  # the caller's own deadline fires first
        logger=_PAHO_LOG,
    )


async def _exchange(
    client: aiomqtt.Client, settings: RoundtripSettings, refusals: list[int], progress: _Progress
) -> float | None:
    """Connect, subscribe, publish a unique token: the seconds until it came back (None: it did not)."""
    await client.__aenter__()
    progress.connected = True
    progress.step = "waiting for SUBACK"
    granted = await _answer(client, client.subscribe(settings.topic, qos=settings.qos))
    failed = [_code(code) for code in granted if _code(code) >= 0x80]
    if failed:
        raise _Denied(f"the broker refused the subscription to {settings.topic!r}: SUBACK 0x{failed[0]:02x}")
    progress.step = "waiting for PUBACK" if settings.qos else "publishing"
    token = f"mqtt-cert-exporter {uuid.uuid4().hex}".encode()
    sent = time.monotonic()
    await _answer(client, client.publish(settings.topic, token, qos=settings.qos))
    if refusals:
        raise _Denied(f"the broker refused our publish to {settings.topic!r}: PUBACK 0x{refusals[0]:02x}")
    progress.step = "waiting for our message to come back"
    async for message in client.messages:
        if message.payload == token:
            return time.monotonic() - sent
    return None


def _paho_hooks(
    client: aiomqtt.Client, connector: _Connector, budget: float
) -> tuple[list[int], Callable[[], None]]:
    """Everything aiomqtt has no public API for (see the module's docstring), in one place.

    Returns the PUBACK refusals as they arrive, and what ends paho's connection for good.
    """
    paho = client._client  # aiomqtt's own paho client: reached only for 1.-4.  # noqa: SLF001 - paho hooks, no public API (issue 15 item 5)
    paho.connect_timeout = budget  # 3.
    paho._create_socket_connection = connector.connect  # type: ignore[method-assign]  # 1.  # noqa: SLF001 - paho hooks, no public API (issue 15 item 5)
    refusals: list[int] = []
    original_on_publish = paho.on_publish

    def on_publish(*args: Any) -> None:  # 2.
        reason_code = args[3]
        if getattr(reason_code, "is_failure", False):
            refusals.append(int(reason_code.value))
        if original_on_publish is not None:
            original_on_publish(*args)

    paho.on_publish = on_publish
    original_on_socket_open = paho.on_socket_open

    def on_socket_open(client: Any, userdata: Any, sock: Any) -> None:  # 4.
        if connector.abandoned:
            # We gave up while paho's thread was still connecting: nobody will read this socket, and
            # paho's client would only let it go when the garbage collector breaks the client's cycles.
            # Close it now, and keep the event loop out of what paho does with it afterwards.
            for hook in ("on_socket_close", "on_socket_register_write", "on_socket_unregister_write"):
                setattr(client, hook, None)
            with contextlib.suppress(OSError):
                sock.close()
        elif original_on_socket_open is not None:
            original_on_socket_open(client, userdata, sock)

    paho.on_socket_open = on_socket_open

    def abandon() -> None:  # 4.
        if paho.socket() is not None:
            paho._sock_close()  # unregisters aiomqtt's reader, ends its misc task, closes the socket  # noqa: SLF001 - paho hooks, no public API (issue 15 item 5)

    return refusals, abandon


def _code(value: object) -> int:
    """A paho ReasonCode or a plain int (3.1.1 codes), as an int."""
    code = getattr(value, "value", value)
    return code if isinstance(code, int) else -1


def _failed(reason: Reason, detail: str, unverified: bool) -> RoundtripFacts:
    return RoundtripFacts(
        success=False, failure=Failure(Stage.ROUNDTRIP, reason, detail), unverified_connection=unverified
    )
