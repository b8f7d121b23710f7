"""mqtt-cert-exporter: watch MQTT brokers' TLS the way a client sees it."""

__version__ = "0.1.0"
