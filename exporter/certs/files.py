"""Certificate files the probe reads (trust stores, intermediates), cached until they change on disk."""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from functools import lru_cache

from mqtt_cert_exporter.certs.parse import Parsed, TrustStore, load_pem_bundle
from mqtt_cert_exporter.config import file_stamp


@lru_cache(maxsize=256)
def _read_bundle(path: str, stamp: tuple[int, int]) -> tuple[Parsed, ...]:
    try:
        with open(path, "rb") as handle:
            return tuple(load_pem_bundle(handle.read()))
    except OSError:
        return ()


def certificates_in(path: str) -> tuple[Parsed, ...]:
    return _read_bundle(path, file_stamp(path))


def system_ca_file() -> str | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def trust_store(ca_file: str | None) -> TrustStore:
    """The anchors a verifying client would use: ``ca_file``, else the system store."""
    if ca_file:
        return _store(ca_file, file_stamp(ca_file), f"the configured ca_file {ca_file}")
    system = system_ca_file()
    if system is None:
        return TrustStore("the system trust store (not found)", ())
    return _store(system, file_stamp(system), "the system trust store")


@lru_cache(maxsize=256)
def _store(path: str, stamp: tuple[int, int], description: str) -> TrustStore:
    return TrustStore(description, _read_bundle(path, stamp))


# --------------------------------------------------------------------------------------------------
# The broker's own certificate file (tls.served_cert_file): read every probe, parsed once per content.

#: A certificate file (leaf + intermediates, perhaps a key) is a few KB; refuse to slurp a wrong path.
MAX_CERTIFICATE_FILE = 1 << 20


@dataclass(frozen=True, slots=True)
class CertificateFile:
    """What a certificate file holds right now. ``error`` says why there is nothing ("" when fine)."""

    path: str
    #: where the symlinks lead (certbot: live/NAME/cert.pem -> ../../archive/NAME/certN.pem)
    resolved_path: str
    certificates: tuple[Parsed, ...] = ()
    #: Unix time the resolved file was last modified
    modified: float = 0.0
    error: str = ""


def read_certificate_file(path: str) -> CertificateFile:
    """Read ``path`` now, following symlinks. Never raises.

    The bytes are read on every call (a renewal may rewrite the file in place within the same
    second, with the same size) and parsed once per distinct content.
    """
    resolved = os.path.realpath(path)
    try:
        with open(resolved, "rb") as handle:
            status = os.fstat(handle.fileno())
            data = handle.read(MAX_CERTIFICATE_FILE + 1)
    except FileNotFoundError:
        if os.path.islink(path) or resolved != os.path.abspath(path):
            return CertificateFile(path, resolved, error=f"{path} leads to {resolved}, which does not exist")
        return CertificateFile(path, resolved, error=f"{path}: no such file")
    except PermissionError:
        return CertificateFile(
            path,
            resolved,
            error=f"{resolved}: permission denied for the exporter (uid {os.geteuid()}); "
            "give it read access to the certificate (not the key), e.g. through the file's group",
        )
    except IsADirectoryError:
        return CertificateFile(path, resolved, error=f"{resolved}: is a directory, not a certificate file")
    except OSError as exc:
        return CertificateFile(path, resolved, error=f"{resolved}: {exc.strerror or exc}")
    if len(data) > MAX_CERTIFICATE_FILE:
        return CertificateFile(
            path,
            resolved,
            modified=status.st_mtime,
            error=f"{resolved}: larger than {MAX_CERTIFICATE_FILE} bytes",
        )
    certificates = _bundle(data)
    if not certificates:
        return CertificateFile(
            path, resolved, modified=status.st_mtime, error=f"{resolved}: no PEM or DER certificate in it"
        )
    return CertificateFile(path, resolved, certificates, status.st_mtime)


@lru_cache(maxsize=1024)
def _bundle(data: bytes) -> tuple[Parsed, ...]:
    return tuple(load_pem_bundle(data))
