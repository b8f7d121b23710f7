"""What differs between MQTT broker implementations, for the fixes the exporter suggests (pure tables).

A fix names the generic action first; the broker-specific how-to follows for the broker's kind when it
is known (``broker_kind`` in the configuration, ``mosquitto`` for discovered listeners), else for each
kind, labelled -- never one broker's instruction presented as if it applied to another.

Facts per broker (as configured on their current releases): Mosquitto 2 (mosquitto.conf), RabbitMQ 3.x
with the MQTT and Web-MQTT plugins (rabbitmq.conf; Erlang TLS), EMQX 5 (emqx.conf listeners), HiveMQ
4 (config.xml), ejabberd (ejabberd.yml, mod_mqtt).
"""

from __future__ import annotations

from enum import StrEnum


class BrokerKind(StrEnum):
    MOSQUITTO = "mosquitto"
    RABBITMQ = "rabbitmq"
    EMQX = "emqx"
    HIVEMQ = "hivemq"
    EJABBERD = "ejabberd"


#: The value of ``broker_kind`` that means "not said" (the default)
UNKNOWN = ""

_NAMES = {
    BrokerKind.MOSQUITTO: "Mosquitto",
    BrokerKind.RABBITMQ: "RabbitMQ",
    BrokerKind.EMQX: "EMQX",
    BrokerKind.HIVEMQ: "HiveMQ",
    BrokerKind.EJABBERD: "ejabberd",
}


class Topic(StrEnum):
    """What a fix needs to tell per broker."""

    #: make the broker serve a renewed certificate
    RELOAD = "reload"
    #: serve the intermediates (and where the served chain comes from)
    SERVE_CHAIN = "serve_chain"
    #: the root certificate is in the served chain
    ROOT_INCLUDED = "root_included"
    #: refuse TLS 1.0/1.1, or widen the versions / ciphers offered
    TLS_VERSIONS = "tls_versions"
    #: a listener for MQTT over secure WebSockets, and its path
    WEBSOCKET = "websocket"
    #: requiring client certificates, and the CA that issues them
    CLIENT_CERTIFICATE = "client_certificate"
    #: users, passwords and what they may do
    CREDENTIALS = "credentials"
    #: an MQTT-over-TLS listener on a port
    LISTENER = "listener"


_SPECIFICS: dict[Topic, dict[BrokerKind, str]] = {
    Topic.RELOAD: {
        BrokerKind.MOSQUITTO: "SIGHUP reloads plain TLS listeners; WebSocket listeners need a restart",
        BrokerKind.RABBITMQ: "rabbitmqctl eval 'ssl:clear_pem_cache().' (new connections get the new files)",
        BrokerKind.EMQX: "update the listener's certfile (dashboard or emqx ctl), which restarts it",
        BrokerKind.HIVEMQ: "HiveMQ re-reads its keystore on change (or restart it)",
        BrokerKind.EJABBERD: "ejabberdctl reload_config",
    },
    Topic.SERVE_CHAIN: {
        BrokerKind.MOSQUITTO: "certfile = leaf followed by the intermediates",
        BrokerKind.RABBITMQ: "certfile holds the leaf; Erlang adds the chain from ssl_options.cacertfile, "
        "so put the intermediates there",
        BrokerKind.EMQX: "certfile = leaf followed by the intermediates (or the intermediates in cacertfile)",
        BrokerKind.HIVEMQ: "import the whole chain into the keystore entry of the key (keytool -importcert)",
        BrokerKind.EJABBERD: "the PEM in certfiles = key, leaf and intermediates",
    },
    Topic.ROOT_INCLUDED: {
        BrokerKind.MOSQUITTO: "leave the root out of certfile",
        BrokerKind.RABBITMQ: "Erlang sends what ssl_options.cacertfile completes the chain with: the root "
        "comes from there; harmless, and it stays when that file must also verify client certificates",
        BrokerKind.EMQX: "leave the root out of certfile",
        BrokerKind.HIVEMQ: "leave the root out of the keystore entry's chain",
        BrokerKind.EJABBERD: "leave the root out of the PEM in certfiles",
    },
    Topic.TLS_VERSIONS: {
        BrokerKind.MOSQUITTO: "tls_version and ciphers on the listener",
        BrokerKind.RABBITMQ: "ssl_options.versions.1 = tlsv1.3, ssl_options.versions.2 = tlsv1.2 (and "
        "ssl_options.ciphers)",
        BrokerKind.EMQX: "ssl_options.versions of the listener",
        BrokerKind.HIVEMQ: "<protocols> and <cipher-suites> of the tls listener",
        BrokerKind.EJABBERD: "protocol_options: [no_tlsv1, no_tlsv1_1] and ciphers",
    },
    Topic.WEBSOCKET: {
        BrokerKind.MOSQUITTO: "listener PORT + protocol websockets (any path)",
        BrokerKind.RABBITMQ: "the rabbitmq_web_mqtt plugin, web_mqtt.ssl.port; path /ws",
        BrokerKind.EMQX: "a wss listener; path /mqtt",
        BrokerKind.HIVEMQ: "a tls-websocket-listener; path /mqtt",
        BrokerKind.EJABBERD: "ejabberd_http with request_handlers /mqtt: mod_mqtt; path /mqtt",
    },
    Topic.CLIENT_CERTIFICATE: {
        BrokerKind.MOSQUITTO: "require_certificate true + cafile",
        BrokerKind.RABBITMQ: "ssl_options.verify = verify_peer, fail_if_no_peer_cert = true, cacertfile",
        BrokerKind.EMQX: "ssl_options.verify = verify_peer, fail_if_no_peer_cert = true, cacertfile",
        BrokerKind.HIVEMQ: "<client-authentication-mode>REQUIRED</...> with a truststore",
        BrokerKind.EJABBERD: "tls_verify: true with cafile",
    },
    Topic.CREDENTIALS: {
        BrokerKind.MOSQUITTO: "password_file (mosquitto_passwd) and acl_file; it answers 'not authorized' "
        "to a wrong password too",
        BrokerKind.RABBITMQ: "rabbitmqctl authenticate_user / list_permissions (a user needs access to the "
        "MQTT vhost)",
        BrokerKind.EMQX: "the authentication and authorization sources of the listener",
        BrokerKind.HIVEMQ: "its security extension (file RBAC, ESE)",
        BrokerKind.EJABBERD: "the user in ejabberd's auth and mod_mqtt's access rules",
    },
    Topic.LISTENER: {
        BrokerKind.MOSQUITTO: "mosquitto.conf: listener PORT with certfile/keyfile",
        BrokerKind.RABBITMQ: "mqtt.listeners.ssl.default = PORT",
        BrokerKind.EMQX: "listeners.ssl.default.bind",
        BrokerKind.HIVEMQ: "a tls-tcp-listener on the port",
        BrokerKind.EJABBERD: "a listen entry with module mod_mqtt and tls: true",
    },
}


def specifics(topic: Topic, kind: str) -> str:
    """How the generic action is done on this kind of broker ("RabbitMQ: ..."); for an unknown kind, on
    each kind, labelled. Never empty."""
    table = _SPECIFICS[topic]
    if kind in table:
        chosen = BrokerKind(kind)
        return f"{_NAMES[chosen]}: {table[chosen]}"
    return "; ".join(f"{_NAMES[each]}: {text}" for each, text in table.items())
