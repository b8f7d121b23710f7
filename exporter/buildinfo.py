"""Where this exporter came from: version, git revision and branch, build date, Python and OpenSSL.

The revision, branch and date are recorded when the wheel is built (setup.py writes
``_build_info.json`` into the package); an editable install or a bare checkout says ``unknown``.
Shown by ``--version`` (like blackbox_exporter's) and as ``mqtt_cert_exporter_build_info``.
"""

from __future__ import annotations

import functools
import json
import platform
import ssl
from dataclasses import dataclass
from importlib import resources

from mqtt_cert_exporter import __version__

#: Written at build time next to this module; see setup.py.
BUILD_INFO_FILE = "_build_info.json"
UNKNOWN = "unknown"


@dataclass(frozen=True)
class BuildInfo:
    version: str
    revision: str
    branch: str
    build_date: str
    python_version: str
    python_implementation: str
    openssl_version: str
    platform: str


def parse_recorded(text: str | None) -> dict[str, str]:
    """Pure: the recorded fields, only the string ones; bad or missing content means none."""
    if not text:
        return {}
    try:
        recorded = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(recorded, dict):
        return {}
    return {key: value for key, value in recorded.items() if isinstance(key, str) and isinstance(value, str)}


def _recorded_text() -> str | None:
    try:
        return (
            resources.files(__package__ or "mqtt_cert_exporter")
            .joinpath(BUILD_INFO_FILE)
            .read_text(encoding="utf-8")
        )
    except OSError:
        return None


@functools.cache
def build_info() -> BuildInfo:
    recorded = parse_recorded(_recorded_text())
    return BuildInfo(
        version=__version__,
        revision=recorded.get("revision") or UNKNOWN,
        branch=recorded.get("branch") or UNKNOWN,
        build_date=recorded.get("build_date") or UNKNOWN,
        python_version=platform.python_version(),
        python_implementation=platform.python_implementation(),
        openssl_version=ssl.OPENSSL_VERSION,
        platform=f"{platform.system().lower()}/{platform.machine()}",
    )


def version_text(info: BuildInfo) -> str:
    """Pure: the ``--version`` text, laid out like the Prometheus exporters' (blackbox_exporter)."""
    return (
        f"mqtt-cert-exporter, version {info.version} (branch: {info.branch}, revision: {info.revision})\n"
        f"  build date:       {info.build_date}\n"
        f"  python version:   {info.python_version} ({info.python_implementation})\n"
        f"  openssl version:  {info.openssl_version}\n"
        f"  platform:         {info.platform}"
    )
