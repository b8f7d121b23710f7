"""Certificate files the probe reads (trust stores, intermediates), cached until they change on disk."""

from __future__ import annotations

import os
import ssl
from functools import lru_cache

from exporter.probe.chain import Parsed, TrustStore, load_pem_bundle


def _stamp(path: str) -> tuple[int, int]:
    try:
        status = os.stat(path)
    except OSError:
        return (0, 0)
    return (status.st_mtime_ns, status.st_size)


@lru_cache(maxsize=256)
def _read_bundle(path: str, stamp: tuple[int, int]) -> tuple[Parsed, ...]:
    try:
        with open(path, "rb") as handle:
            return tuple(load_pem_bundle(handle.read()))
    except OSError:
        return ()


def certificates_in(path: str) -> tuple[Parsed, ...]:
    return _read_bundle(path, _stamp(path))


def system_ca_file() -> str | None:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def trust_store(ca_file: str | None) -> TrustStore:
    """The anchors a verifying client would use: ``ca_file``, else the system store."""
    if ca_file:
        return _store(ca_file, _stamp(ca_file), f"the configured ca_file {ca_file}")
    system = system_ca_file()
    if system is None:
        return TrustStore("the system trust store (not found)", ())
    return _store(system, _stamp(system), "the system trust store")


@lru_cache(maxsize=256)
def _store(path: str, stamp: tuple[int, int], description: str) -> TrustStore:
    return TrustStore(description, _read_bundle(path, stamp))
