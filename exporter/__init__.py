"""mqtt-cert-exporter: watch MQTT brokers' TLS the way a client sees it."""

from importlib import metadata

#: The one version source is pyproject.toml; an installed distribution (wheel or editable) carries it.
try:
    __version__ = metadata.version("mqtt-cert-exporter")
except metadata.PackageNotFoundError:  # a bare checkout on sys.path, never installed
    __version__ = "0.0.0+unknown"
