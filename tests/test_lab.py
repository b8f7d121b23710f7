"""The lab is real: certificates from mqtt_cert_exporter.lab.pki, served by real Mosquitto, judged by OpenSSL."""

from __future__ import annotations

import socket
import ssl
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID

from mqtt_cert_exporter.lab import (
    Issued,
    Listener,
    Mosquitto,
    MosquittoError,
    Pki,
    PortInUseError,
    free_port,
    make_password_file,
    mosquitto_binary,
    wait_for_port,
)
from mqtt_cert_exporter.lab import mosquitto as mosquitto_module

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None, reason="mosquitto not installed: run scripts/ensure-system-packages.sh"
)

WEAK = "DEFAULT:@SECLEVEL=0"
USERS = {"alice": "wonderland", "bob": "builder"}
# OpenSSL X509_V_ERR_* codes as seen in SSLCertVerificationError.verify_code
CERT_HAS_EXPIRED = 10
SELF_SIGNED_LEAF = 18
UNABLE_TO_GET_ISSUER_CERT_LOCALLY = 20
EE_KEY_TOO_SMALL = 66
CA_MD_TOO_WEAK = 68


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


HAVE_IPV6 = _ipv6_loopback()


@dataclass
class Lab:
    root: Issued
    intermediate: Issued
    good: Issued
    client: Issued
    broker: Mosquitto


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    base = tmp_path_factory.mktemp("lab")
    pki = Pki(base / "pki")
    root = pki.root("Lab Root")
    inter = pki.intermediate("Lab Intermediate", root)
    good = pki.leaf("good", root)
    expired = pki.leaf("expired", root, not_after=datetime.now(UTC) - timedelta(days=1))
    via_inter = pki.leaf("via-intermediate", inter)
    weak_rsa = pki.leaf("rsa1024", root, key="rsa1024")
    sha1 = pki.leaf_sha1("sha1", root)
    client = pki.leaf("client", root, client=True, dns_names=(), ip_addresses=())

    def tls(name: str, leaf: Issued, cert: Path | None = None, **options: Any) -> Listener:
        return Listener(name, cert=cert or leaf.cert_path, key=leaf.key_path, **options)

    listeners = [
        tls("good", good),
        tls("expired", expired),
        tls("no-chain", via_inter),
        tls("chain", via_inter, cert=via_inter.chain_path(inter)),
        tls("rsa1024", weak_rsa, ciphers=WEAK),
        tls("sha1", sha1, ciphers=WEAK),
        tls("password", good, password_file=make_password_file(base / "passwd", USERS)),
        tls(
            "password-builtin",
            good,
            password_file=make_password_file(base / "passwd-builtin", USERS, use_tool=False),
        ),
        tls("mtls", good, cafile=root.cert_path, require_certificate=True),
        tls("websockets", good, websockets=True),
        Listener("plain"),
    ]
    if HAVE_IPV6:
        listeners.append(tls("ipv6", good, host="::1"))
    with Mosquitto(listeners, base / "broker") as broker:
        yield Lab(root=root, intermediate=inter, good=good, client=client, broker=broker)


def _context(cafile: Path, *, ciphers: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile))
    if ciphers is not None:
        context.set_ciphers(ciphers)
    return context


def _connect(broker: Mosquitto, name: str, context: ssl.SSLContext) -> ssl.SSLSocket:
    listener = broker.listener(name)
    raw = socket.create_connection((listener.host, listener.port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def _verify_code(broker: Mosquitto, name: str, context: ssl.SSLContext) -> int:
    with pytest.raises(ssl.SSLCertVerificationError) as caught:
        _connect(broker, name, context).close()
    return caught.value.verify_code


def _peer(tls: ssl.SSLSocket) -> x509.Certificate:
    der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def _subject_and_san(tls: ssl.SSLSocket) -> tuple[Any, Any]:
    peer = tls.getpeercert()
    assert peer
    return peer["subject"], peer.get("subjectAltName", ())


def _mqtt_string(value: str) -> bytes:
    data = value.encode()
    return struct.pack("!H", len(data)) + data


def _connack_code(sock: socket.socket, username: str | None = None, password: str | None = None) -> int:
    """Send an MQTT 3.1.1 CONNECT, return the CONNACK return code."""
    flags = 0x02  # clean session
    payload = _mqtt_string("lab-test")
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += _mqtt_string(password)
    body = _mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 30) + payload
    assert len(body) < 128  # one-byte remaining length
    sock.sendall(bytes([0x10, len(body)]) + body)
    connack = b""
    while len(connack) < 4:
        chunk = sock.recv(4 - len(connack))
        assert chunk, f"connection closed after {connack!r}"
        connack += chunk
    assert connack[:2] == b"\x20\x02", connack
    return connack[3]


# ---------------------------------------------------------------------------- verification verdicts


def test_good_leaf_verifies_against_root(lab: Lab) -> None:
    with _connect(lab.broker, "good", _context(lab.root.cert_path)) as tls:
        subject, alt_names = _subject_and_san(tls)
        assert tls.version() == "TLSv1.3"
        assert _connack_code(tls) == 0
    assert (("commonName", "good"),) in subject
    assert ("DNS", "localhost") in alt_names
    assert ("IP Address", "127.0.0.1") in alt_names


def test_expired_leaf_fails_with_code_10(lab: Lab) -> None:
    assert _verify_code(lab.broker, "expired", _context(lab.root.cert_path)) == CERT_HAS_EXPIRED


def test_missing_intermediate_fails_but_chain_file_verifies(lab: Lab) -> None:
    context = _context(lab.root.cert_path)
    assert _verify_code(lab.broker, "no-chain", context) == UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    with _connect(lab.broker, "chain", context) as tls:
        assert (("commonName", "via-intermediate"),) in _subject_and_san(tls)[0]


def test_rsa1024_leaf_loads_with_seclevel_0_and_default_client_rejects_it(lab: Lab) -> None:
    assert _verify_code(lab.broker, "rsa1024", _context(lab.root.cert_path)) == EE_KEY_TOO_SMALL
    # The broker really serves it: a client at security level 0 accepts the chain.
    with _connect(lab.broker, "rsa1024", _context(lab.root.cert_path, ciphers=WEAK)) as tls:
        key = _peer(tls).public_key()
        assert isinstance(key, rsa.RSAPublicKey)
        assert key.key_size == 1024


def test_sha1_leaf_loads_with_seclevel_0_and_default_client_rejects_it(lab: Lab) -> None:
    assert _verify_code(lab.broker, "sha1", _context(lab.root.cert_path)) == CA_MD_TOO_WEAK
    with _connect(lab.broker, "sha1", _context(lab.root.cert_path, ciphers=WEAK)) as tls:
        cert = _peer(tls)
        # (cryptography cannot check SHA-1 signatures; OpenSSL at level 0 just did.)
        assert isinstance(cert.signature_hash_algorithm, hashes.SHA1)
        assert cert.issuer == lab.root.cert.subject


def test_tls12_only_broker_negotiates_tls12(lab: Lab, tmp_path: Path) -> None:
    good = Listener("good", cert=lab.good.cert_path, key=lab.good.key_path)
    context = _context(lab.root.cert_path)
    assert context.maximum_version in (ssl.TLSVersion.MAXIMUM_SUPPORTED, ssl.TLSVersion.TLSv1_3)
    with Mosquitto([good], tmp_path, tls12_only=True) as broker, _connect(broker, "good", context) as tls:
        assert tls.version() == "TLSv1.2"
        assert _connack_code(tls) == 0


# ---------------------------------------------------------------------------- listener features


@pytest.mark.parametrize("listener", ["password", "password-builtin"])
def test_password_listener_checks_credentials(lab: Lab, listener: str) -> None:
    context = _context(lab.root.cert_path)
    for username, password, expected in [
        ("alice", "wonderland", 0),
        ("bob", "builder", 0),
        ("alice", "wrong", 5),  # 3.1.1 "not authorized"; Mosquitto never answers 4 here
        (None, None, 5),  # anonymous refused
    ]:
        with _connect(lab.broker, listener, context) as tls:
            assert _connack_code(tls, username, password) == expected, (username, password)


def test_mtls_listener_accepts_client_certificate(lab: Lab) -> None:
    context = _context(lab.root.cert_path)
    context.load_cert_chain(lab.client.cert_path, lab.client.key_path)
    with _connect(lab.broker, "mtls", context) as tls:
        assert _connack_code(tls) == 0


def test_plaintext_and_websockets_listeners_accept_tcp(lab: Lab) -> None:
    with socket.create_connection(("127.0.0.1", lab.broker.port("plain")), timeout=5) as sock:
        assert _connack_code(sock) == 0
    with _connect(lab.broker, "websockets", _context(lab.root.cert_path)) as tls:
        assert tls.version() == "TLSv1.3"


@pytest.mark.skipif(not HAVE_IPV6, reason="no IPv6 loopback")
def test_ipv6_listener(lab: Lab) -> None:
    assert lab.broker.address("ipv6") == f"[::1]:{lab.broker.port('ipv6')}"
    with _connect(lab.broker, "ipv6", _context(lab.root.cert_path)) as tls:
        assert _connack_code(tls) == 0


def _listening_addresses() -> dict[int, set[str]]:
    """port -> local addresses (hex, as in /proc/net/tcp*) of every listening TCP socket."""
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if fields[3] == "0A":  # TCP_LISTEN
                listening.setdefault(int(port_hex, 16), set()).add(address)
    return listening


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net/tcp")
def test_every_listener_binds_loopback_only(lab: Lab) -> None:
    loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1, ::1
    listening = _listening_addresses()
    for name in ["good", "plain", "websockets", *(["ipv6"] if HAVE_IPV6 else [])]:
        assert listening[lab.broker.port(name)] <= loopback, name


def test_config_and_log(lab: Lab) -> None:
    config = lab.broker.config_path.read_text()
    for line in ["per_listener_settings true", "set_tcp_nodelay true", "persistence false"]:
        assert line in config.splitlines()
    assert "running" in lab.broker.log_path.read_text()
    assert lab.broker.running


# ---------------------------------------------------------------------------- process handling


def test_start_failure_reports_log_tail(lab: Lab, tmp_path: Path) -> None:
    weak = Pki(tmp_path / "pki").leaf("weak", lab.root, key="rsa1024")
    broker = Mosquitto([Listener("weak", cert=weak.cert_path, key=weak.key_path)], tmp_path / "broker")
    with pytest.raises(MosquittoError, match="ee key too small"):
        broker.start()
    assert not broker.running


def test_taken_port_is_retried_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        handed_out: list[int] = []

        def racy_free_port(host: str = "127.0.0.1") -> int:
            port = taken if not handed_out else free_port(host)
            handed_out.append(port)
            return port

        monkeypatch.setattr(mosquitto_module, "free_port", racy_free_port)
        with Mosquitto([Listener("a")], tmp_path / "retry") as broker:
            assert broker.port("a") != taken
            assert handed_out[0] == taken
        monkeypatch.undo()
        with pytest.raises(PortInUseError):
            Mosquitto([Listener("fixed", port=taken)], tmp_path / "fixed").start()


def test_stop_is_idempotent(tmp_path: Path) -> None:
    broker = Mosquitto([Listener("plain")], tmp_path)
    broker.start()
    port = broker.port("plain")
    broker.stop()
    broker.stop()
    assert not broker.running
    with pytest.raises(TimeoutError, match=f"127.0.0.1:{port}"):
        wait_for_port("127.0.0.1", port, timeout=0.1)


# ---------------------------------------------------------------------------- certificate factory


def test_leaf_extensions_and_files(lab: Lab, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    url = "http://127.0.0.1:1/lab-intermediate.der"
    leaf = pki.leaf("server", lab.intermediate, aia_ca_issuers_url=url, common_name="broker.lab")
    extensions = leaf.cert.extensions
    basic = extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical
    assert not basic.value.ca
    assert extensions.get_extension_for_class(x509.KeyUsage).critical
    eku = extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = lab.intermediate.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    aia = extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    assert [(d.access_method, d.access_location.value) for d in aia] == [
        (AuthorityInformationAccessOID.CA_ISSUERS, url)
    ]
    san = extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    assert leaf.cert.subject.rfc4514_string() == "O=mqtt-cert-exporter lab,CN=broker.lab"
    assert isinstance(leaf.cert.signature_hash_algorithm, hashes.SHA256)
    leaf.cert.verify_directly_issued_by(lab.intermediate.cert)
    assert stat.S_IMODE(leaf.key_path.stat().st_mode) == 0o644
    assert leaf.chain_path(lab.intermediate).read_bytes().count(b"BEGIN CERTIFICATE") == 2
    assert pki.bundle("two-roots", lab.root, lab.intermediate).read_bytes().count(b"BEGIN CERT") == 2
    client = pki.leaf("client", lab.root, client=True)
    client_eku = client.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(client_eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_key_types_and_validity(lab: Lab, tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    assert isinstance(pki.leaf("p384", lab.root, key="ec384").key, ec.EllipticCurvePrivateKey)
    ed = pki.root("ed-root", key="ed25519")
    assert isinstance(ed.key, ed25519.Ed25519PrivateKey)
    assert ed.cert.signature_hash_algorithm is None
    rsa_leaf = pki.leaf("rsa", ed, key="rsa2048")
    assert isinstance(rsa_leaf.key, rsa.RSAPrivateKey)
    rsa_leaf.cert.verify_directly_issued_by(ed.cert)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    future = pki.leaf("not-yet-valid", lab.root, not_before=start, days=10)
    assert future.cert.not_valid_before_utc == start
    assert future.cert.not_valid_after_utc == start + timedelta(days=10)
    with pytest.raises(ValueError, match="unknown key type"):
        pki.leaf("bad", lab.root, key="dsa")


def test_self_signed_leaf_fails_with_code_18(lab: Lab, tmp_path: Path) -> None:
    leaf = Pki(tmp_path / "pki").leaf("self-signed", None)
    basic = leaf.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert leaf.cert.issuer == leaf.cert.subject
    assert not basic.ca
    listener = Listener("self", cert=leaf.cert_path, key=leaf.key_path)
    with Mosquitto([listener], tmp_path / "broker") as broker:
        assert _verify_code(broker, "self", _context(lab.root.cert_path)) == SELF_SIGNED_LEAF
