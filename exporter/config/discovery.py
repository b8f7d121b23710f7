"""Zero-config next to Mosquitto: every TLS listener of a mosquitto.conf becomes a broker to probe.

``discover: {mosquitto_conf: /etc/mosquitto/mosquitto.conf}`` in the exporter's config. The parser
follows Mosquitto 2.0's own rules (src/conf.c), measured against ``mosquitto`` 2.0.11:

* one directive per line, ``#`` at the start of a line is a comment; file values (``certfile``...) are
  the rest of the line; unknown directives are ignored here (Mosquitto's problem, not ours);
* ``listener PORT [BIND]`` starts a listener; options before the first ``listener`` of a file belong
  to the *default listener* (``port``, ``bind_address``), which exists when any of them is set;
* ``include_dir DIR`` (only in the main file) reads ``DIR/*.conf`` in byte order, at that point; every
  included file starts again with the default listener as the current one;
* ``certfile``/``keyfile``/``cafile``/``require_certificate``/``protocol`` are always per listener;
  ``per_listener_settings true`` makes the *security* options (``password_file``, ``allow_anonymous``)
  per listener too, else they are global: the parser reports which apply to each listener;
* a listener is a TLS listener when it has a ``certfile``; ``protocol websockets`` makes it wss://.

What becomes of a TLS listener (see :func:`discovered_brokers`): name ``mosquitto-PORT`` (the bind
address is appended when two listeners share a port), address = its bind address (``0.0.0.0`` ->
127.0.0.1, ``::`` -> ::1) or ``localhost``, ``served_cert_file`` = its ``certfile``. The listener's
``cafile`` is NOT used as the probe's trust store: in Mosquitto it is the CA of *client* certificates.
The trust store is the exporter's ``tls.ca_file`` (defaults or ``discover``), else the system store.

Everything here is pure except :func:`load`, which reads the files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from mqtt_cert_exporter.config.grammar import certificate_covers

DEFAULT_PORT = 1883
WSS_PATH = "/mqtt"
#: Directives that configure the current listener (so they create the default listener when set there).
_LISTENER_STRINGS = ("certfile", "keyfile", "cafile", "capath")
_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True, slots=True)
class ConfFile:
    path: str
    text: str


#: Lists the ``*.conf`` files of an include_dir in load order; raises OSError when it cannot.
IncludeReader = Callable[[str], Sequence[ConfFile]]


@dataclass(frozen=True, slots=True)
class MosquittoListener:
    port: int
    #: the bind address or host as written; None: all interfaces
    bind: str | None = None
    websockets: bool = False
    certfile: str | None = None
    keyfile: str | None = None
    #: CA(s) for *client* certificates (mTLS), not for the broker's own certificate
    cafile: str | None = None
    capath: str | None = None
    require_certificate: bool = False
    #: the security options that apply to this listener (its own ones with per_listener_settings)
    password_file: str | None = None
    allow_anonymous: bool = False
    #: where the listener is defined, "file:line" ("" for a default listener made only of options)
    source: str = ""

    @property
    def tls(self) -> bool:
        return self.certfile is not None


@dataclass(frozen=True, slots=True)
class MosquittoConf:
    path: str
    #: TCP listeners in the order Mosquitto creates them (the default listener last); unix sockets aside
    listeners: tuple[MosquittoListener, ...] = ()
    per_listener_settings: bool = False
    #: every file read, main file first
    files: tuple[str, ...] = ()
    #: "file:line: message" for what Mosquitto itself would refuse
    errors: tuple[str, ...] = ()

    @property
    def tls_listeners(self) -> tuple[MosquittoListener, ...]:
        return tuple(listener for listener in self.listeners if listener.tls)


@dataclass
class _Draft:
    port: int | None = None
    bind: str | None = None
    websockets: bool = False
    strings: dict[str, str] = field(default_factory=dict)
    require_certificate: bool = False
    password_file: str | None = None
    allow_anonymous: bool | None = None
    source: str = ""
    unix_socket: bool = False
    touched: bool = False


@dataclass
class _Security:
    password_file: str | None = None
    allow_anonymous: bool | None = None


@dataclass
class _State:
    base_dir: str
    include: IncludeReader
    default: _Draft = field(default_factory=_Draft)
    listeners: list[_Draft] = field(default_factory=list)
    per_listener_settings: bool = False
    security_set: bool = False
    globals: _Security = field(default_factory=_Security)
    files: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _no_includes(directory: str) -> Sequence[ConfFile]:
    raise OSError(f"include_dir {directory} cannot be read here")


def parse(text: str, path: str, *, include: IncludeReader = _no_includes) -> MosquittoConf:
    """Parse a mosquitto.conf given as text. ``include`` supplies the files of an include_dir; relative
    paths are taken relative to the directory of ``path`` (Mosquitto takes them relative to its working
    directory, which is ``/`` under systemd: write absolute paths)."""
    state = _State(base_dir=os.path.dirname(os.path.abspath(path)), include=include)
    _parse_file(state, ConfFile(path, text), level=0)
    listeners = [*state.listeners]
    default = state.default
    if default.touched:
        if default.port is None:
            default.port = DEFAULT_PORT
        listeners.append(default)
    return MosquittoConf(
        path=path,
        listeners=tuple(_finish(state, draft) for draft in listeners if not draft.unix_socket),
        per_listener_settings=state.per_listener_settings,
        files=tuple(state.files),
        errors=tuple(state.errors),
    )


def _finish(state: _State, draft: _Draft) -> MosquittoListener:
    security = (
        _Security(draft.password_file, draft.allow_anonymous)
        if state.per_listener_settings
        else state.globals
    )
    assert draft.port is not None
    return MosquittoListener(
        port=draft.port,
        bind=draft.bind,
        websockets=draft.websockets,
        certfile=draft.strings.get("certfile"),
        keyfile=draft.strings.get("keyfile"),
        cafile=draft.strings.get("cafile"),
        capath=draft.strings.get("capath"),
        require_certificate=draft.require_certificate,
        password_file=security.password_file,
        # Mosquitto 2.0: once a listener is configured, anonymous access is off unless allowed.
        allow_anonymous=bool(security.allow_anonymous),
        source=draft.source,
    )


def _parse_file(state: _State, conf: ConfFile, *, level: int) -> None:  # noqa: C901, PLR0912, PLR0915 - one branch per mosquitto.conf directive; debt: a table of directive handlers
    state.files.append(conf.path)
    current = state.default  # every file starts with the default listener (conf.c keeps it per file)
    for number, raw in enumerate(conf.text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{conf.path}:{number}"
        key, _, rest = line.partition(" ")
        if "\t" in key:
            key, _, more = key.partition("\t")
            rest = f"{more} {rest}"
        rest = rest.strip()

        def error(message: str, where: str = where) -> None:
            state.errors.append(f"{where}: {message}")

        if key == "listener":
            current = _listener(state, rest, where, error)
        elif key == "port":
            port = _port(rest, error, allow_zero=False)
            if port is not None:
                state.default.port = port
                state.default.touched = True
        elif key == "bind_address":
            if rest:
                state.default.bind = rest
                state.default.touched = True
            else:
                error("empty bind_address")
        elif key == "protocol":
            if rest in ("mqtt", "websockets"):
                current.websockets = rest == "websockets"
                current.touched = True
            else:
                error(f"invalid protocol {rest!r}: Mosquitto accepts mqtt or websockets")
        elif key in _LISTENER_STRINGS:
            if not rest:
                error(f"empty {key} value")
            elif key in current.strings:
                error(f"duplicate {key} value for this listener (Mosquitto refuses to start)")
            else:
                current.strings[key] = _absolute(state, rest)
                current.touched = True
        elif key == "require_certificate":
            value = _bool(key, rest, error)
            if value is not None:
                current.require_certificate = value
                current.touched = True
        elif key == "per_listener_settings":
            value = _bool(key, rest, error)
            if value and state.security_set and not state.per_listener_settings:
                error(
                    "per_listener_settings must be set before any security setting (Mosquitto refuses this)"
                )
            elif value:
                state.per_listener_settings = True  # once set, it stays set (as in Mosquitto)
        elif key in ("password_file", "allow_anonymous"):
            state.security_set = True
            target: _Draft | _Security = current if state.per_listener_settings else state.globals
            if key == "password_file":
                target.password_file = _absolute(state, rest) if rest else None
            else:
                target.allow_anonymous = _bool(key, rest, error)
        elif key == "include_dir" and level == 0:  # Mosquitto reads include_dir in the main file only
            _include(state, rest, level, error)


def _listener(state: _State, rest: str, where: str, error: Callable[[str], None]) -> _Draft:
    args = rest.split()
    draft = _Draft(source=where, touched=True)
    if not args:
        error("empty listener value")
        draft.unix_socket = True  # unusable: keep parsing its options, never report it
        return draft
    port = _port(args[0], error, allow_zero=True)
    bind = args[1] if len(args) > 1 and not args[1].startswith("#") else None
    if port is None:
        draft.unix_socket = True
    elif port == 0:
        if bind is None:
            error("a listener with port 0 must give a unix socket path")
        draft.unix_socket = True
    draft.port, draft.bind = port, bind
    state.listeners.append(draft)
    return draft


def _port(text: str, error: Callable[[str], None], *, allow_zero: bool) -> int | None:
    low = 0 if allow_zero else 1
    if text.isascii() and text.isdigit() and low <= int(text) <= 65535:
        return int(text)
    error(f"invalid port {text!r}: expected {low}-65535")
    return None


def _bool(key: str, text: str, error: Callable[[str], None]) -> bool | None:
    value = _BOOLEANS.get(text)
    if value is None:
        error(f"invalid {key} value {text!r}: Mosquitto accepts true or false")
    return value


def _absolute(state: _State, path: str) -> str:
    return os.path.normpath(os.path.join(state.base_dir, path))


def _include(state: _State, directory: str, level: int, error: Callable[[str], None]) -> None:
    if not directory:
        error("empty include_dir value")
        return
    directory = _absolute(state, directory)
    try:
        files = state.include(directory)
    except OSError as exc:
        error(f"include_dir {directory}: {exc.strerror or exc}")
        return
    for conf in files:
        _parse_file(state, conf, level=level + 1)


# --------------------------------------------------------------------------------------------------
# Listeners -> brokers


@dataclass(frozen=True, slots=True)
class DiscoveredBroker:
    """What a TLS listener becomes: the config loader adds the exporter's settings to it."""

    name: str
    #: an address as ``parse_address`` reads it: host:port, or wss://host:port/mqtt
    address: str
    listener: MosquittoListener

    @property
    def served_cert_file(self) -> str:
        assert self.listener.certfile is not None
        return self.listener.certfile


def probe_host(bind: str | None) -> str:
    """Where to reach a listener from the same host."""
    if bind is None or bind in ("", "localhost"):
        return "localhost"
    if bind == "0.0.0.0":
        return "127.0.0.1"
    if bind in ("::", "[::]"):
        return "::1"
    return bind.strip("[]")


def discovered_brokers(conf: MosquittoConf, *, prefix: str = "mosquitto") -> tuple[DiscoveredBroker, ...]:
    """One broker per TLS listener, named ``PREFIX-PORT`` (``PREFIX-PORT-BIND`` when a port repeats)."""
    listeners = conf.tls_listeners
    ports = [listener.port for listener in listeners]
    brokers: list[DiscoveredBroker] = []
    for listener in listeners:
        name = f"{prefix}-{listener.port}"
        if ports.count(listener.port) > 1:
            name += f"-{listener.bind or 'any'}"
        host = probe_host(listener.bind)
        shown = f"[{host}]" if ":" in host else host
        address = f"{shown}:{listener.port}"
        if listener.websockets:
            address = f"wss://{address}{WSS_PATH}"
        brokers.append(DiscoveredBroker(name, address, listener))
    return tuple(brokers)


class CertificateNames(Protocol):
    """What a certificate says it covers (``exporter.results.CertFacts`` is one)."""

    @property
    def dns_names(self) -> tuple[str, ...]: ...
    @property
    def ip_addresses(self) -> tuple[str, ...]: ...
    @property
    def common_name(self) -> str: ...
    @property
    def parse_error(self) -> str: ...


def server_name_for(leaf: CertificateNames | None, host: str) -> str | None:
    """The name to check when probing a local listener at ``host``: the certificate file's first DNS
    name, when the certificate does not already cover ``host`` (a broker's certificate names its public
    host, not localhost). None: keep the default (``host``)."""
    if leaf is None or leaf.parse_error:
        return None
    if certificate_covers(host, leaf.dns_names, leaf.ip_addresses, leaf.common_name):
        return None
    return next((name for name in leaf.dns_names if not name.startswith("*")), None)


# --------------------------------------------------------------------------------------------------
# I/O


def read_include_dir(directory: str) -> list[ConfFile]:
    """The ``*.conf`` files of a directory, in the order Mosquitto loads them (byte order)."""
    names = sorted(name for name in os.listdir(directory) if name.endswith(".conf"))
    files: list[ConfFile] = []
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            files.append(ConfFile(path, _read(path)))
    return files


def _read(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


def load(path: str) -> MosquittoConf:
    """Read and parse a mosquitto.conf and its include_dir files. Raises OSError for the main file."""
    return parse(_read(path), path, include=read_include_dir)
