"""A throw-away TLS/MQTT lab: certificates and real Mosquitto brokers on loopback.

Shipped for the ``demo`` subcommand, which needs it; the test suite and the benchmark use it too.
What only they need (hostile servers, the exporter as a child process) lives in tests/lab/. Nothing
here is meant for production: keys are written unencrypted and world-readable so a broker can load them.
"""

from mqtt_cert_exporter.lab.mosquitto import (
    Listener,
    Mosquitto,
    MosquittoError,
    PortInUseError,
    make_password_file,
    mosquitto_binary,
    password_line,
)
from mqtt_cert_exporter.lab.pki import Issued, Pki, PrivateKey
from mqtt_cert_exporter.lab.ports import free_port, port_open, wait_for_port

__all__ = [
    "Issued",
    "Listener",
    "Mosquitto",
    "MosquittoError",
    "Pki",
    "PortInUseError",
    "PrivateKey",
    "free_port",
    "make_password_file",
    "mosquitto_binary",
    "password_line",
    "port_open",
    "wait_for_port",
]
