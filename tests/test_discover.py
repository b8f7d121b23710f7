"""Zero-config discovery from mosquitto.conf: the pure parser, then a real Mosquitto started from such
a configuration (include_dir, per_listener_settings, several listeners) and probed."""

from __future__ import annotations

import os
import subprocess
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from mqtt_cert_exporter.config import discovery as discover
from mqtt_cert_exporter.config import load_config
from mqtt_cert_exporter.config.discovery import ConfFile, MosquittoListener
from mqtt_cert_exporter.lab.mosquitto import mosquitto_binary
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.lab.ports import free_port, wait_for_port
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.results import CertFacts
from tests.conftest import cert_facts


def parse(text: str, path: str = "/etc/mosquitto/mosquitto.conf", **includes: str) -> discover.MosquittoConf:
    """``includes``: file name -> text, all in /etc/mosquitto/conf.d."""

    def include(directory: str) -> Sequence[ConfFile]:
        if directory != "/etc/mosquitto/conf.d":
            raise FileNotFoundError(2, "No such file or directory")
        names = sorted(name for name in includes if name.endswith(".conf"))
        return [ConfFile(f"{directory}/{name}", includes[name]) for name in names]

    return discover.parse(textwrap.dedent(text), path, include=include)


def test_tls_listeners_with_their_files() -> None:
    conf = parse(
        """
        # a comment
        per_listener_settings true

        listener 1883 127.0.0.1
        allow_anonymous true

        listener 8883
        certfile /etc/mosquitto/certs/server.crt
        keyfile /etc/mosquitto/certs/server.key
        cafile /etc/mosquitto/ca/clients.crt
        require_certificate true

        listener 8884 ::
        protocol websockets
        certfile certs/ws.crt
        keyfile certs/ws.key
        """
    )
    assert conf.errors == ()
    assert [(item.port, item.bind, item.tls, item.websockets) for item in conf.listeners] == [
        (1883, "127.0.0.1", False, False),
        (8883, None, True, False),
        (8884, "::", True, True),
    ]
    tls = conf.listeners[1]
    assert tls.certfile == "/etc/mosquitto/certs/server.crt"
    assert tls.cafile == "/etc/mosquitto/ca/clients.crt" and tls.require_certificate
    assert tls.source == "/etc/mosquitto/mosquitto.conf:8"
    # relative paths: relative to the main file's directory
    assert conf.listeners[2].certfile == "/etc/mosquitto/certs/ws.crt"
    assert conf.per_listener_settings


def test_include_dir_is_read_in_place_and_in_byte_order() -> None:
    conf = parse(
        """
        listener 8883
        certfile /c/main.crt
        include_dir /etc/mosquitto/conf.d
        keyfile /c/main.key
        """,
        **{
            "b.conf": "listener 9002\ncertfile /c/b.crt\n",
            "A.conf": "listener 9001\ncertfile /c/a.crt\n",
            "c.conf.disabled": "listener 9999\ncertfile /c/never.crt\n",
        },
    )
    assert conf.errors == ()
    assert [item.port for item in conf.listeners] == [8883, 9001, 9002]
    # after the included files, the main file goes on with ITS current listener
    assert conf.listeners[0].keyfile == "/c/main.key"
    assert conf.files == (
        "/etc/mosquitto/mosquitto.conf",
        "/etc/mosquitto/conf.d/A.conf",
        "/etc/mosquitto/conf.d/b.conf",
    )


def test_include_dir_reader_takes_conf_files_in_byte_order(tmp_path: Path) -> None:
    for name in ("b.conf", "A.conf", "a.conf", "x.conf.dpkg-old", "README"):
        (tmp_path / name).write_text(f"# {name}\n")
    (tmp_path / "dir.conf").mkdir()
    files = discover.read_include_dir(str(tmp_path))
    assert [Path(item.path).name for item in files] == ["A.conf", "a.conf", "b.conf"]
    assert files[0].text == "# A.conf\n"


def test_an_included_file_starts_with_the_default_listener() -> None:
    conf = parse(
        """
        listener 8883
        include_dir /etc/mosquitto/conf.d
        """,
        **{"tls.conf": "port 8884\ncertfile /c/default.crt\nkeyfile /c/default.key\n"},
    )
    # the certfile is the default listener's, not listener 8883's; the default listener comes last
    assert [(item.port, item.certfile) for item in conf.listeners] == [(8883, None), (8884, "/c/default.crt")]


def test_include_dir_only_from_the_main_file() -> None:
    conf = parse(
        "include_dir /etc/mosquitto/conf.d\n",
        **{"a.conf": "include_dir /etc/mosquitto/conf.d\nlistener 9001\ncertfile /c/a.crt\n"},
    )
    assert [item.port for item in conf.listeners] == [9001]


def test_default_listener_from_top_level_options() -> None:
    conf = parse("port 8883\nbind_address 0.0.0.0\ncertfile /c/s.crt\nkeyfile /c/s.key\n")
    assert [(item.port, item.bind, item.tls) for item in conf.listeners] == [(8883, "0.0.0.0", True)]
    conf = parse("certfile /c/s.crt\nkeyfile /c/s.key\n")
    assert [(item.port, item.tls) for item in conf.listeners] == [(1883, True)]
    assert parse("log_type all\n").listeners == ()


def test_security_options_follow_per_listener_settings() -> None:
    text = """
        {setting}
        password_file /etc/mosquitto/passwd
        listener 8883
        certfile /c/a.crt
        allow_anonymous true
        listener 8884
        certfile /c/b.crt
        password_file /etc/mosquitto/passwd-8884
        """
    shared = parse(text.format(setting=""))
    # global: the last value of each option applies to every listener
    assert {(item.password_file, item.allow_anonymous) for item in shared.listeners} == {
        ("/etc/mosquitto/passwd-8884", True)
    }
    own = parse(text.format(setting="per_listener_settings true"))
    by_port = {item.port: item for item in own.listeners}
    assert (by_port[8883].password_file, by_port[8883].allow_anonymous) == (None, True)
    assert (by_port[8884].password_file, by_port[8884].allow_anonymous) == (
        "/etc/mosquitto/passwd-8884",
        False,
    )
    # the first password_file (before any listener) belongs to the default listener, which has no port
    # and no TLS option: it is not created
    assert sorted(by_port) == [8883, 8884]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("listener abc\n", "mosquitto.conf:1: invalid port 'abc': expected 0-65535"),
        ("listener 70000\n", "mosquitto.conf:1: invalid port '70000': expected 0-65535"),
        ("listener\n", "mosquitto.conf:1: empty listener value"),
        ("listener 0\n", "mosquitto.conf:1: a listener with port 0 must give a unix socket path"),
        ("port 0\n", "mosquitto.conf:1: invalid port '0': expected 1-65535"),
        ("listener 8883\nprotocol mqttsn\n", "mosquitto.conf:2: invalid protocol 'mqttsn'"),
        ("listener 8883\ncertfile /a\ncertfile /b\n", "mosquitto.conf:3: duplicate certfile value"),
        ("listener 8883\nrequire_certificate yes\n", "mosquitto.conf:2: invalid require_certificate value"),
        ("include_dir /nowhere\n", "mosquitto.conf:1: include_dir /nowhere: No such file or directory"),
        (
            "password_file /p\nper_listener_settings true\n",
            "mosquitto.conf:2: per_listener_settings must be set before any security setting",
        ),
    ],
)
def test_errors_name_file_and_line(text: str, error: str) -> None:
    errors = parse(text).errors
    assert len(errors) == 1 and error in errors[0], errors


def test_unix_socket_listeners_and_unknown_directives_are_skipped() -> None:
    conf = parse(
        """
        listener 0 /run/mosquitto.sock
        certfile /c/unix.crt
        some_future_option 42
        listener 8883
        certfile /c/tcp.crt
        """
    )
    assert conf.errors == ()
    assert [item.port for item in conf.listeners] == [8883]


def test_brokers_from_listeners() -> None:
    conf = discover.MosquittoConf(
        "/etc/mosquitto/mosquitto.conf",
        listeners=(
            MosquittoListener(1883),
            MosquittoListener(8883, certfile="/c/a.crt"),
            MosquittoListener(8884, bind="0.0.0.0", certfile="/c/b.crt", websockets=True),
            MosquittoListener(8885, bind="::", certfile="/c/c.crt"),
            MosquittoListener(8886, bind="10.0.0.1", certfile="/c/d.crt"),
            MosquittoListener(8886, bind="10.0.0.2", certfile="/c/d.crt"),
        ),
    )
    brokers = discover.discovered_brokers(conf)
    assert [(item.name, item.address, item.served_cert_file) for item in brokers] == [
        ("mosquitto-8883", "localhost:8883", "/c/a.crt"),
        ("mosquitto-8884", "wss://127.0.0.1:8884/mqtt", "/c/b.crt"),
        ("mosquitto-8885", "[::1]:8885", "/c/c.crt"),
        ("mosquitto-8886-10.0.0.1", "10.0.0.1:8886", "/c/d.crt"),
        ("mosquitto-8886-10.0.0.2", "10.0.0.2:8886", "/c/d.crt"),
    ]
    assert discover.discovered_brokers(conf, prefix="edge")[0].name == "edge-8883"


def _leaf(dns: tuple[str, ...], ips: tuple[str, ...] = ()) -> CertFacts:
    return cert_facts(
        fingerprint_sha256="00" * 32,
        subject="CN=x",
        issuer="CN=y",
        not_after=1.0,
        dns_names=dns,
        ip_addresses=ips,
        common_name="x",
    )


def test_server_name_comes_from_the_certificate_when_it_does_not_cover_the_probed_host() -> None:
    assert discover.server_name_for(_leaf(("mqtt.example.com", "alt.example.com")), "localhost") == (
        "mqtt.example.com"
    )
    assert discover.server_name_for(_leaf(("*.example.com", "mqtt.example.com")), "localhost") == (
        "mqtt.example.com"
    )
    assert discover.server_name_for(_leaf(("localhost",)), "localhost") is None
    assert discover.server_name_for(_leaf(("mqtt.example.com",), ("127.0.0.1",)), "127.0.0.1") is None
    assert discover.server_name_for(_leaf(("*.example.com",)), "localhost") is None
    assert discover.server_name_for(None, "localhost") is None


# --------------------------------------------------------------------------------------------------
# A real Mosquitto started from a real, multi-file configuration


@dataclass
class RealConf:
    path: Path
    ports: dict[str, int]
    public: Issued
    local: Issued
    ca: Path


def _start(conf: Path, ports: Sequence[int], log: Path) -> subprocess.Popen[bytes]:
    binary = mosquitto_binary()
    if binary is None:
        pytest.fail("mosquitto is not installed: run `bash scripts/ensure-system-packages.sh`")
    with open(log, "wb") as out:
        process = subprocess.Popen([binary, "-c", str(conf)], stdout=out, stderr=subprocess.STDOUT)
    try:
        for port in ports:
            wait_for_port("127.0.0.1", port, timeout=10)
    except TimeoutError:
        process.kill()
        process.wait()
        raise AssertionError(f"mosquitto did not start:\n{log.read_text(errors='replace')}") from None
    return process


@pytest.fixture(scope="module")
def real_conf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealConf]:
    directory = tmp_path_factory.mktemp("discover")
    pki = Pki(directory / "pki")
    root = pki.root("Discover Root")
    # a certificate for the public name only (the usual case), and one that covers localhost
    public = pki.leaf("public", root, dns_names=("mqtt.example.com",), ip_addresses=())
    local = pki.leaf("local", root)
    ports = {name: free_port() for name in ("plain", "tls", "ws", "included")}
    conf_d = directory / "conf.d"
    conf_d.mkdir()
    user = "user root\n" if os.geteuid() == 0 else ""
    main = directory / "mosquitto.conf"
    main.write_text(
        f"""# like Debian's: the main file includes conf.d
{user}per_listener_settings true
persistence false
set_tcp_nodelay true
log_dest stderr

listener {ports["plain"]} 127.0.0.1
allow_anonymous true

listener {ports["tls"]} 127.0.0.1
allow_anonymous true
certfile {public.cert_path}
keyfile {public.key_path}

include_dir {conf_d}
"""
    )
    (conf_d / "10-websockets.conf").write_text(
        f"""listener {ports["ws"]} 127.0.0.1
protocol websockets
socket_domain ipv4
allow_anonymous true
certfile {local.cert_path}
keyfile {local.key_path}
"""
    )
    (conf_d / "20-clients.conf").write_text(
        f"""listener {ports["included"]} 127.0.0.1
allow_anonymous false
password_file {directory / "passwd"}
certfile {local.cert_path}
keyfile {local.key_path}
"""
    )
    (directory / "passwd").write_text("")
    (directory / "passwd").chmod(0o644)
    process = _start(main, list(ports.values()), directory / "mosquitto.log")
    yield RealConf(main, ports, public, local, root.cert_path)
    process.terminate()
    process.wait(10)


def test_real_conf_parses_like_mosquitto_runs_it(real_conf: RealConf) -> None:
    conf = discover.load(str(real_conf.path))
    assert conf.errors == ()
    assert len(conf.files) == 3
    assert [item.port for item in conf.tls_listeners] == [
        real_conf.ports["tls"],
        real_conf.ports["ws"],
        real_conf.ports["included"],
    ]
    included = conf.tls_listeners[2]
    assert included.password_file is not None and not included.allow_anonymous
    assert conf.tls_listeners[0].allow_anonymous


async def test_discovered_brokers_are_probed(real_conf: RealConf, tmp_path: Path) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        f"""
defaults:
  timeout: 3s
discover:
  mosquitto_conf: {real_conf.path}
  tls:
    ca_file: {real_conf.ca}
brokers:
  - name: elsewhere
    address: 192.0.2.1:8883
"""
    )
    config = load_config(str(config_file))
    ports = real_conf.ports
    names = [broker.name for broker in config.brokers]
    assert names == [
        "elsewhere",
        f"mosquitto-{ports['tls']}",
        f"mosquitto-{ports['ws']}",
        f"mosquitto-{ports['included']}",
    ]
    tls, ws, included = config.brokers[1:]
    assert tls.address == f"127.0.0.1:{ports['tls']}"
    assert ws.address == f"wss://127.0.0.1:{ports['ws']}/mqtt"
    assert tls.tls.served_cert_file == str(real_conf.public.cert_path)
    # the public certificate does not cover 127.0.0.1: its name is checked (and sent as SNI)
    assert tls.server_name == "mqtt.example.com"
    assert included.server_name == "127.0.0.1"  # this one covers 127.0.0.1
    assert tls.tls.ca_file == str(real_conf.ca)  # never the listener's cafile (that is for clients)
    assert tls.timeout == 3.0

    prober = Prober()
    result = await prober.probe(tls)
    assert result.success, result.failure
    assert result.served_file is not None and result.served_file.matches is True

    refused = await prober.probe(included)
    assert refused.failure is not None and (refused.failure.stage.value, refused.failure.reason.value) == (
        "mqtt",
        "refused",
    )
    assert refused.served_file is not None and refused.served_file.matches is True

    # wss: whatever the MQTT-over-WebSocket stage says, the TLS side is judged
    over_ws = await prober.probe(ws)
    assert over_ws.tls is not None and over_ws.tls.verdict.trusted
    assert over_ws.served_file is not None and over_ws.served_file.matches is True


def test_discovery_is_re_read_at_every_load(real_conf: RealConf, tmp_path: Path) -> None:
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    main = tmp_path / "mosquitto.conf"
    main.write_text(f"listener 8883\ncertfile {real_conf.local.cert_path}\ninclude_dir {conf_d}\n")
    config_file = tmp_path / "config.yaml"
    config_file.write_text(f"discover: {{mosquitto_conf: {main}}}\n")
    assert [broker.name for broker in load_config(str(config_file)).brokers] == ["mosquitto-8883"]
    (conf_d / "more.conf").write_text(f"listener 8884\ncertfile {real_conf.local.cert_path}\n")
    assert [broker.name for broker in load_config(str(config_file)).brokers] == [
        "mosquitto-8883",
        "mosquitto-8884",
    ]
