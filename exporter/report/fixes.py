"""The fix catalogue: for every failure and trust problem, its cause in plain words and the concrete fix.

Pure. Wording is part of the product: tests (and users' runbooks) look for these sentences.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mqtt_cert_exporter.certs.interception import interception_product
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.connack import PROTOCOL_5, PROTOCOL_311, RefusalCause, connack_meaning, refusal_cause
from mqtt_cert_exporter.report.wording import display_name, file_name, host_port, names_covered, utc_date
from mqtt_cert_exporter.results import CertFacts, Failure, ProbeResult, Problem, ServedFileFacts


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong, or about to be: its cause in plain words and the concrete fix."""

    #: a Problem value, "stage/reason", or "expires_soon"
    kind: str
    cause: str
    fix: str


RENEW_FIX = (
    "renew it with your CA, point the broker's certfile/keyfile at the new files, "
    "restart or reload the broker (Mosquitto: SIGHUP)"
)
FULL_CHAIN_FIX = (
    "serve the full chain (certfile = leaf followed by intermediates; "
    "with Let's Encrypt use fullchain.pem, not cert.pem)"
)
CAFILE_HOWTO = (
    "mosquitto_sub --cafile FILE, paho tls_set(ca_certs=FILE); for this exporter --ca-file / tls.ca_file"
)
CREDENTIALS_HOWTO = "--username and --password-file (config: mqtt.username and mqtt.password_file)"
RELOAD_FIX = "reload the broker (Mosquitto: SIGHUP; WebSocket listeners need a restart)"
REVOKED_FIX = "the CA revoked this certificate: issue a new one and deploy it"
WRONG_FILE_FIX = (
    "check that tls.served_cert_file names the certfile of this very listener (mosquitto.conf); if it "
    "does, the broker runs with another file: point it at this one and restart it"
)
ANCHOR_FIX = (
    "before then, move to the CA's successor root: add it to every client's trust store (cafile; for this "
    "exporter tls.ca_file / --ca-file) and serve a chain that leads to it (the CA's new intermediate or "
    "cross-signed chain)"
)
CLIENT_CERT_FIX = (
    "renew it with the CA the brokers trust for clients (their cafile) and point the exporter at the new "
    "files (config: tls.cert_file and tls.key_file; check: --cert-file and --key-file)"
)


def problem_fix(problem: Problem, result: ProbeResult, broker: BrokerConfig) -> str:
    """What to do about one trust problem of this broker's chain."""
    chain = result.tls.chain if result.tls else ()
    return _special_problem_fix(problem, chain, broker) or _usual_problem_fix(problem, chain, broker)


def _usual_problem_fix(problem: Problem, chain: Sequence[CertFacts], broker: BrokerConfig) -> str:
    match problem:
        case Problem.EXPIRED:
            return RENEW_FIX
        case Problem.NOT_YET_VALID:
            return (
                "check the clocks of this machine and of the CA that issued it (NTP); if the start date is "
                "intended, wait for it, or reissue the certificate valid from now and reload the broker"
            )
        case Problem.SELF_SIGNED:
            return (
                "replace it with a certificate issued by a CA your clients trust; if it is self-signed on "
                f"purpose, give clients this very certificate as their cafile ({CAFILE_HOWTO})"
            )
        case Problem.UNKNOWN_CA:
            return _unknown_ca_fix(chain)
        case Problem.INCOMPLETE_CHAIN:
            return FULL_CHAIN_FIX
        case Problem.HOSTNAME_MISMATCH:
            covered = ", ".join(names_covered(chain[0])) if chain else ""
            return (
                f"connect with a name the certificate covers ({covered or 'none'}; for this exporter "
                f"--server-name / tls.server_name), or reissue the certificate with {broker.server_name} "
                "in its subjectAltName and reload the broker"
            )
        case Problem.WEAK_KEY:
            return (
                "reissue the certificate with a stronger key (RSA 2048 bits or more, or EC P-256): "
                "OpenSSL clients at their default security level refuse it"
            )
        case Problem.WEAK_SIGNATURE:
            return (
                "reissue it signed with SHA-256 or stronger: current clients refuse SHA-1 and MD5 signatures"
            )
        case Problem.INVALID:
            return (
                "inspect the chain with: openssl s_client -connect "
                f"{host_port(broker)} -servername {broker.server_name} -showcerts"
            )
    return ""


def _special_problem_fix(problem: Problem, chain: Sequence[CertFacts], broker: BrokerConfig) -> str:
    """The fixes of chains found in the wild (issue 13): "" when the usual one applies."""
    if problem is Problem.UNSUITABLE_PURPOSE:
        return (
            "deploy a certificate issued for a TLS server: keyUsage digitalSignature (and keyEncipherment "
            "for RSA), extendedKeyUsage serverAuth; if the broker serves a CA certificate as its own, put "
            "the server certificate first and the CA certificates after it"
        )
    if problem is Problem.HOSTNAME_MISMATCH and chain and chain[0].is_ca:
        return (
            "the server sends a CA certificate as its own: deploy the broker's server certificate (issued "
            f"for {broker.server_name}) with its key, and the CA certificate only as an intermediate"
        )
    if problem is Problem.SELF_SIGNED and interception_product(chain):
        return _interception_fix(interception_product(chain))
    return ""


def _interception_fix(product: str) -> str:
    return (
        f"the certificate comes from {product}, which inspects TLS between this machine and the broker, not "
        "from the broker: exempt the broker's host and port from TLS inspection (MQTT clients that verify "
        "certificates fail the same way); trust the inspection CA only if clients are meant to go through it"
    )


def _unknown_ca_fix(chain: Sequence[CertFacts]) -> str:
    if not chain:
        return f"give clients the certificate of the CA that issued it as their cafile ({CAFILE_HOWTO})"
    product = interception_product(chain)
    if product:
        return _interception_fix(product)
    top = chain[-1]
    if top.self_issued:
        root = display_name(top.subject)
        return (
            f"the chain ends at the root {root}: if clients should trust it, give them its certificate as "
            f"cafile ({CAFILE_HOWTO}); otherwise use a certificate from a CA they already trust"
        )
    issuer = display_name(top.issuer)
    return (
        f"{issuer} issued it: if {issuer} is an intermediate CA, {FULL_CHAIN_FIX}; if it is your own root CA, "
        f"give clients its certificate as cafile ({CAFILE_HOWTO})"
    )


#: Fix per "stage/reason" (the metric label values); ``{host}`` and ``{port}`` are the broker's.
FAILURE_FIXES: Mapping[str, str] = {
    "resolve/dns_error": "check the host name for typos and that this machine's DNS resolves it (getent hosts {host})",
    "connect/refused": (
        "nothing accepts connections on port {port}: is the broker running, and does it have a listener on "
        "this port (mosquitto.conf: listener {port})? MQTT over TLS is usually on 8883"
    ),
    "connect/timeout": (
        "no answer at all: a firewall or security group probably drops packets to port {port}; check the "
        "address and that the port is open from this machine"
    ),
    "connect/unreachable": "no route to the broker: check the address, the network (VPN, routes) and firewalls",
    "connect/reset": (
        "the connection was reset as soon as it opened: a firewall, a load balancer or a connection limit "
        "(Mosquitto: max_connections) rejects it"
    ),
    "connect/proxy_error": (
        "the proxy did not open the tunnel to the broker: check the proxy's address and credentials, and "
        "that it allows connections to port {port}"
    ),
    "tls/timeout": (
        "TCP connected but the TLS handshake never finished: a plaintext MQTT listener waits silently, so use "
        "the TLS port (e.g. 8883); otherwise the broker or a proxy in between is stuck"
    ),
    "tls/protocol_error": (
        "the server does not speak TLS on this port: probably a plaintext listener (usually 1883); use the TLS "
        "port (e.g. 8883), or enable TLS on this listener (certfile/keyfile)"
    ),
    "tls/handshake_failure": (
        "the server aborted the handshake: probably no TLS version or cipher in common (Mosquitto: "
        "tls_version/ciphers of the listener; this exporter: tls.min_version/max_version)"
    ),
    "tls/certificate_too_large": (
        "the certificate chain the server sends is over the 100 KiB that OpenSSL-based clients (mosquitto_sub, "
        "paho, Python) accept: reissue the certificate with fewer subjectAltNames (one per host, or a "
        "wildcard) and serve only the intermediates clients need"
    ),
    "trust/untrusted": "see the problems listed for the certificate chain",
    "websocket/upgrade_rejected": (
        "the server refused the WebSocket upgrade: check the path of the wss:// address (often /mqtt) and "
        "that the listener speaks WebSockets (Mosquitto: protocol websockets)"
    ),
    "websocket/timeout": (
        "no answer to the WebSocket upgrade: is this a WebSockets listener (Mosquitto: protocol websockets)? "
        "For a plain MQTT-over-TLS port use mqtts://{host}:{port}"
    ),
    "websocket/closed": (
        "the server closed the connection during the WebSocket upgrade: is this a WebSockets listener "
        "(Mosquitto: protocol websockets)? For a plain MQTT-over-TLS port use mqtts://{host}:{port}"
    ),
    "websocket/protocol_error": (
        "the reply is not a WebSocket upgrade: is this a WebSockets listener (Mosquitto: protocol websockets)? "
        "For a plain MQTT-over-TLS port use mqtts://{host}:{port}"
    ),
    "mqtt/timeout": (
        "TLS works but no CONNACK came back: is this an MQTT listener? (a WebSockets listener needs "
        "wss://{host}:{port}/mqtt); otherwise the broker is overloaded or a proxy holds the connection"
    ),
    "mqtt/protocol_error": (
        "the reply is not an MQTT CONNACK: is this port an MQTT listener? If the broker only speaks MQTT 3.1.1, "
        "use --protocol auto or 3.1.1 (config: mqtt.protocol)"
    ),
    "mqtt/websocket_closed": (
        "the broker closed the WebSocket with the status and reason shown instead of a CONNACK: its log says "
        "why (a connection limit, a rejected client id, or authentication)"
    ),
    "mqtt/unsupported_protocol": (
        "the broker does not speak this MQTT version (RabbitMQ before 3.13 and amqtt speak 3.1.1 only): set "
        "mqtt.protocol: auto (the default; --protocol auto), which learns the version without sending "
        "credentials, or the version the broker speaks"
    ),
    "mqtt/closed": (
        "the broker closed the connection before answering CONNECT: check its log; usual causes are an "
        "unsupported protocol version (try --protocol auto), a rejected client id or a connection limit"
    ),
    "roundtrip/timeout": (
        "the test message did not come back: check that the broker's ACL lets the exporter's user publish and "
        "subscribe to the round-trip topic, and the broker's load"
    ),
    "roundtrip/denied": "the broker denied the round-trip topic: allow the exporter's user to use it in the ACL",
    "roundtrip/error": "the round trip failed: see the detail and the broker's log",
}


_SMALL_KEY_FIX = (
    "reissue the broker's certificate with an RSA key of 2048 bits or more, or EC P-256, and reload the "
    "broker: no TLS version or cipher setting makes this key usable for current clients"
)
_WEBSOCKET_AUTH_FIX = (
    "the broker did not accept the credentials (RabbitMQ's Web-MQTT says 'unauthenticated' for a wrong "
    "username or password, an unknown user, or a user without access to the vhost): check {howto}, and "
    "on the broker the user and its vhost permissions (rabbitmqctl list_permissions)"
)


def failure_finding(failure: Failure, result: ProbeResult, broker: BrokerConfig) -> Finding:
    """The cause and fix of one failure (for trust, the problems carry the specifics)."""
    kind = f"{failure.stage.value}/{failure.reason.value}"
    if kind == "tls/client_certificate_required":
        return _client_certificate_finding(kind, broker)
    if kind == "mqtt/refused":
        return _refused_finding(kind, failure, result, broker)
    if (
        kind == "tls/handshake_failure"
        and result.tls is not None
        and Problem.WEAK_KEY in result.tls.verdict.problems
    ):
        return Finding(kind, failure.detail, _SMALL_KEY_FIX)
    if kind == "mqtt/websocket_closed" and "auth" in failure.detail.lower():
        return Finding(kind, failure.detail, _WEBSOCKET_AUTH_FIX.format(howto=CREDENTIALS_HOWTO))
    fix = FAILURE_FIXES.get(kind, "see the broker's log")
    return Finding(kind, failure.detail or kind, fix.format(host=broker.target.host, port=broker.target.port))


def _client_certificate_finding(kind: str, broker: BrokerConfig) -> Finding:
    if broker.tls.cert_file:
        return Finding(
            kind,
            f"the broker rejected the client certificate we sent ({broker.tls.cert_file})",
            "the client certificate must be issued by a CA in the listener's cafile (Mosquitto: "
            "require_certificate true + cafile), be within its validity dates and allow client "
            "authentication (extendedKeyUsage clientAuth)",
        )
    return Finding(
        kind,
        "the broker requires a client certificate (Mosquitto: require_certificate true means every client "
        "must present a certificate issued by a CA in the listener's cafile, or the handshake is aborted)",
        "give the exporter a client certificate issued by that CA: --cert-file and --key-file (config: "
        "tls.cert_file and tls.key_file); or set require_certificate false if clients need not have one",
    )


def _refused_finding(kind: str, failure: Failure, result: ProbeResult, broker: BrokerConfig) -> Finding:
    mqtt = result.mqtt
    if mqtt is None or mqtt.connack_code is None:
        return Finding(kind, failure.detail, "see the broker's log for why it refused the connection")
    protocol, code = mqtt.protocol, mqtt.connack_code
    cause = f"the broker refused the connection: CONNACK code {code} ({connack_meaning(protocol, code)})"
    return Finding(kind, cause, _refusal_fix(refusal_cause(protocol, code), protocol, broker))


def _refusal_fix(cause: RefusalCause | None, protocol: str, broker: BrokerConfig) -> str:
    match cause:
        case RefusalCause.CREDENTIALS if broker.mqtt.username is None:
            return (
                "the broker does not let anonymous clients in (Mosquitto: allow_anonymous false): give the "
                f"exporter credentials with {CREDENTIALS_HOWTO}"
            )
        case RefusalCause.CREDENTIALS:
            return (
                f"bad credentials or not allowed: check the username and password ({CREDENTIALS_HOWTO}); on "
                "the broker, that user's entry in its password_file (mosquitto_passwd) and its ACL "
                "(Mosquitto answers 'not authorized' to a wrong password too)"
            )
        case RefusalCause.PROTOCOL_VERSION:
            other = PROTOCOL_311 if protocol == PROTOCOL_5 else PROTOCOL_5
            return (
                f"the broker does not accept MQTT {protocol}: use --protocol {other} (config: mqtt.protocol)"
            )
        case RefusalCause.CLIENT_ID:
            return "the broker rejected the client id: set one it accepts (config: mqtt.client_id) or let one be generated"
        case RefusalCause.BUSY:
            return (
                "the broker is overloaded, shutting down or limiting connection rates: check its log and load"
            )
        case RefusalCause.BANNED:
            return "the broker banned this client: check its ban list or authentication plugin"
        case RefusalCause.MOVED:
            return "the broker sends clients to another server: probe that one instead"
    return "see the broker's log for why it refused the connection"


def reload_fix(served: ServedFileFacts) -> str:
    assert served.leaf is not None
    return (
        f"the file {file_name(served)} already holds a renewed certificate (expires "
        f"{utc_date(served.leaf.not_after)}): {RELOAD_FIX}"
    )
