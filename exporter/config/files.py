"""The files a configuration names, read as the loader and the probe need them: stamps that change
with a file, checks that OpenSSL can use the TLS files, password files, and the names in a broker's
own certificate file (for mosquitto.conf discovery)."""

from __future__ import annotations

import os
import re
import ssl
import stat
import warnings
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509.oid import NameOID

from mqtt_cert_exporter.config.model import Secret, TlsSettings
from mqtt_cert_exporter.config.values import MQTT_FIELD_MAX_BYTES

#: A certificate file (leaf + intermediates, perhaps a key) is a few KB; refuse to slurp a wrong path.
MAX_CERTIFICATE_FILE = 1 << 20
#: A password is at most MQTT_FIELD_MAX_BYTES; a CRLF after it is allowed.
MAX_PASSWORD_FILE = MQTT_FIELD_MAX_BYTES + 2

Stamp = tuple[int, int]


def file_stamp(path: str) -> Stamp:
    """(mtime_ns, size) of a file, (0, 0) when it cannot be stat'ed: a cache key that changes with it."""
    try:
        status = os.stat(path)
    except OSError:
        return (0, 0)
    return (status.st_mtime_ns, status.st_size)


def readable_file_problem(path: str) -> str | None:
    """Why ``path`` is not a regular file this process can open (None when it is)."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return f"{path}: not a regular file"
        with open(path, "rb"):  # opened (not read) because os.access() lies for root and ACLs
            pass
    except FileNotFoundError:
        return f"{path}: no such file"
    except OSError as exc:
        return f"{path}: {exc.strerror or 'cannot be read'}"
    return None


def tls_files_problem(tls: TlsSettings) -> str | None:
    """Why OpenSSL cannot use these CA / client certificate files (None when it can): the same calls
    the probe's context makes, so what the loader accepts is what a probe can load."""
    files = (tls.ca_file, tls.cert_file, tls.key_file)
    return _tls_files_problem(*files, tuple(file_stamp(path) if path else None for path in files))


@lru_cache(maxsize=256)
def _tls_files_problem(
    ca_file: str | None, cert_file: str | None, key_file: str | None, stamps: tuple[Stamp | None, ...]
) -> str | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca_file:
        try:
            context.load_verify_locations(cafile=ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            return f"ca_file {ca_file}: not a usable PEM certificate bundle ({exc})"
    if cert_file:
        try:
            # An empty password: an encrypted key fails here instead of prompting on the terminal.
            context.load_cert_chain(cert_file, key_file, password=lambda: b"")
        except (ssl.SSLError, OSError, ValueError) as exc:
            return f"cert_file/key_file: cannot load the client certificate and its (unencrypted) key ({exc})"
    return None


def read_password_file(path: str, shown: str | None = None) -> Secret:
    """The password in ``path`` without one trailing newline. ValueError says why not, naming the file
    as ``shown`` (default: ``path``) and never quoting its content.

    Refused: what is not a regular file (a FIFO would block the loader, a device never ends), a file
    bigger than a password can be, and a file of several lines -- a password file holds one password,
    and sending /etc/shadow or a key file to a broker as a password would leak it.
    """
    name = shown or path
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise ValueError(f"{name}: {exc.strerror or 'cannot be read'}") from None
    with open(descriptor, "rb") as file:
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise ValueError(f"{name}: not a regular file")
        data = file.read(MAX_PASSWORD_FILE + 1)
    if len(data) > MAX_PASSWORD_FILE:
        raise ValueError(f"{name}: larger than a password can be ({MQTT_FIELD_MAX_BYTES} bytes)")
    try:
        content = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not valid UTF-8") from None
    for newline in ("\r\n", "\n"):
        if content.endswith(newline):
            content = content.removesuffix(newline)
            break
    if not content:
        raise ValueError(f"{name}: file is empty")
    if sum(1 for line in content.splitlines() if line) > 1:
        raise ValueError(f"{name}: holds several lines; a password file holds the password alone")
    if len(content.encode()) > MQTT_FIELD_MAX_BYTES:
        raise ValueError(f"{name}: larger than a password can be ({MQTT_FIELD_MAX_BYTES} bytes)")
    return Secret(content)


@dataclass(frozen=True, slots=True)
class CertificateNames:
    """The names the first certificate of a file covers."""

    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    common_name: str = ""
    parse_error: str = ""


_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL)


def certificate_names(path: str) -> CertificateNames | None:
    """The names of the first certificate (PEM or DER) in ``path``; None when there is none to read."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CERTIFICATE_FILE + 1)
    except OSError:
        return None
    if len(data) > MAX_CERTIFICATE_FILE:
        return None
    first = _PEM_CERTIFICATE.search(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CryptographyDeprecationWarning)
            cert = x509.load_pem_x509_certificate(first[0]) if first else x509.load_der_x509_certificate(data)
            return _names(cert)
    except (ValueError, x509.InvalidVersion):  # not a certificate cryptography loads
        return None


def _names(cert: x509.Certificate) -> CertificateNames:
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = x509.SubjectAlternativeName([])
    return CertificateNames(
        dns_names=tuple(san.get_values_for_type(x509.DNSName)),
        ip_addresses=tuple(str(ip) for ip in san.get_values_for_type(x509.IPAddress)),
        common_name=str(common_names[0].value) if common_names else "",
    )
