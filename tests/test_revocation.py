"""CRL analysis (pure), the CRL fetcher's cache, and the certificate-file reader, on generated data and
a loopback HTTP server. End to end on real brokers: tests/test_lifecycle.py."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import http.server
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_cert_exporter.cache import BoundedCache
from mqtt_cert_exporter.certs import files
from mqtt_cert_exporter.certs.parse import Parsed, TrustStore, parse_der
from mqtt_cert_exporter.certs.revocation import check, issuer_of, parse_crl
from mqtt_cert_exporter.collector import ExporterFacts, exporter_families
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.probe import Prober
from mqtt_cert_exporter.probe.lifecycle import crl as crl_module
from mqtt_cert_exporter.probe.lifecycle.crl import CrlFetcher
from mqtt_cert_exporter.results import CacheSize, RevocationStatus

UTC = dt.UTC


def parsed(issued: Issued) -> Parsed:
    return parse_der(issued.cert.public_bytes(Encoding.DER))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("revocation"))


@pytest.fixture(scope="module")
def ca(pki: Pki) -> tuple[Issued, Issued, Issued, Issued]:
    root = pki.root("Rev Root")
    intermediate = pki.intermediate("Rev Intermediate", root)
    revoked = pki.leaf("rev-revoked", intermediate)
    kept = pki.leaf("rev-kept", intermediate)
    return root, intermediate, revoked, kept


def test_revoked_and_not_revoked(pki: Pki, ca: tuple[Issued, Issued, Issued, Issued]) -> None:
    _, intermediate, revoked, kept = ca
    path = pki.crl("rev-main", intermediate, revoked=[revoked], reason=x509.ReasonFlags.superseded)
    crl = parse_crl(path.read_bytes())
    assert crl.next_update is not None and crl.next_update > time.time()
    now = time.time()
    verdict = check(parsed(revoked), parsed(intermediate), crl, position=0, url="http://x/c.crl", now=now)
    assert verdict.status is RevocationStatus.REVOKED and verdict.reason == "superseded"
    assert verdict.revoked_at is not None and abs(verdict.revoked_at - now) < 3600
    good = check(parsed(kept), parsed(intermediate), crl, position=0, url="http://x/c.crl", now=now)
    assert good.status is RevocationStatus.GOOD and good.crl_next_update == crl.next_update


def test_pem_crls_are_read_too(pki: Pki, ca: tuple[Issued, Issued, Issued, Issued]) -> None:
    _, intermediate, revoked, _ = ca
    crl = parse_crl(pki.crl("rev-pem", intermediate, revoked=[revoked], pem=True, reason=None).read_bytes())
    verdict = check(parsed(revoked), parsed(intermediate), crl, position=0, url="u", now=time.time())
    assert verdict.status is RevocationStatus.REVOKED and verdict.reason == ""
    with pytest.raises(ValueError):
        parse_crl(b"<html>not found</html>")


@pytest.mark.parametrize(
    ("case", "detail"),
    [
        ("other_issuer", "indirect CRLs are not supported"),
        ("forged", "is not signed by"),
        ("no_issuer", "was neither sent by the server nor found in the trust store"),
        ("stale", "is stale"),
    ],
)
def test_unusable_crls_give_unknown(
    pki: Pki, ca: tuple[Issued, Issued, Issued, Issued], case: str, detail: str
) -> None:
    root, intermediate, _, kept = ca
    now = dt.datetime.now(UTC)
    issuer: Issued | None = intermediate
    if case == "other_issuer":
        path = pki.crl("rev-root-crl", root)
    elif case == "forged":
        path = pki.crl("rev-forged", intermediate, signer=pki.root("Rev Forger"))
    elif case == "no_issuer":
        path, issuer = pki.crl("rev-noissuer", intermediate), None
    else:
        path = pki.crl(
            "rev-stale",
            intermediate,
            last_update=now - dt.timedelta(days=9),
            next_update=now - dt.timedelta(days=2),
        )
    crl = parse_crl(path.read_bytes())
    verdict = check(
        parsed(kept),
        parsed(issuer) if issuer else None,
        crl,
        position=0,
        url="http://x/c.crl",
        now=time.time(),
    )
    assert verdict.status is RevocationStatus.UNKNOWN and detail in verdict.detail, verdict.detail


def test_a_stale_crl_still_proves_a_revocation(pki: Pki, ca: tuple[Issued, Issued, Issued, Issued]) -> None:
    _, intermediate, revoked, _ = ca
    now = dt.datetime.now(UTC)
    path = pki.crl(
        "rev-stale-revoked",
        intermediate,
        revoked=[revoked],
        last_update=now - dt.timedelta(days=9),
        next_update=now - dt.timedelta(days=2),
    )
    verdict = check(
        parsed(revoked),
        parsed(intermediate),
        parse_crl(path.read_bytes()),
        position=0,
        url="u",
        now=time.time(),
    )
    assert verdict.status is RevocationStatus.REVOKED


def test_issuer_is_found_among_sent_certificates_then_the_store(
    ca: tuple[Issued, Issued, Issued, Issued],
) -> None:
    root, intermediate, revoked, _ = ca
    leaf, inter = parsed(revoked), parsed(intermediate)
    store = TrustStore("test store", (parsed(root),))
    assert issuer_of(leaf, [leaf, inter], store) is inter
    assert issuer_of(inter, [leaf, inter], store) == parsed(root)
    assert issuer_of(leaf, [leaf], store) is None


def test_ttl_follows_next_update_within_bounds(pki: Pki, ca: tuple[Issued, Issued, Issued, Issued]) -> None:
    _, intermediate, _, _ = ca
    now = dt.datetime.now(UTC)
    week = parse_crl(pki.crl("rev-ttl-week", intermediate).read_bytes())
    assert crl_module.ttl(week, time.time()) == crl_module.MAX_TTL
    soon = parse_crl(
        pki.crl("rev-ttl-soon", intermediate, next_update=now + dt.timedelta(hours=2)).read_bytes()
    )
    assert 7000 < crl_module.ttl(soon, time.time()) <= 7200
    past = parse_crl(
        pki.crl(
            "rev-ttl-past",
            intermediate,
            last_update=now - dt.timedelta(days=2),
            next_update=now - dt.timedelta(days=1),
        ).read_bytes()
    )
    assert crl_module.ttl(past, time.time()) == crl_module.MIN_TTL


# --------------------------------------------------------------------------------------------------
# The fetcher


class SlowServer:
    """Serves CRLs (``/c.crl``, and whatever ``bodies`` adds); counts requests; can be made slow, and can
    leave out Content-Length (the body then ends when the connection closes)."""

    def __init__(self, body: bytes) -> None:
        self.hits = 0
        self.delay = 0.0
        self.bodies = {"/c.crl": body}
        self.send_length = True
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                time.sleep(owner.delay)
                served = owner.bodies.get(self.path)
                if served is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                if owner.send_length:
                    self.send_header("Content-Length", str(len(served)))
                self.end_headers()
                with contextlib.suppress(OSError):  # a client that refused the body hangs up
                    self.wfile.write(served)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def server(pki: Pki, ca: tuple[Issued, Issued, Issued, Issued]) -> Iterator[SlowServer]:
    _, intermediate, revoked, _ = ca
    running = SlowServer(pki.crl("rev-served", intermediate, revoked=[revoked]).read_bytes())
    yield running
    running.server.shutdown()
    running.server.server_close()


async def test_one_download_per_url_then_cached(server: SlowServer) -> None:
    fetcher = CrlFetcher()
    answers = await asyncio.gather(*(fetcher.fetch(f"{server.url}/c.crl", 5) for _ in range(5)))
    assert all(crl is not None for crl, _ in answers) and server.hits == 1
    assert fetcher.cached(f"{server.url}/c.crl") == answers[0]
    await fetcher.fetch(f"{server.url}/c.crl", 5)
    assert server.hits == 1


async def test_failures_are_cached_briefly_with_their_reason(server: SlowServer) -> None:
    fetcher = CrlFetcher()
    crl, error = await fetcher.fetch(f"{server.url}/missing.crl", 5)
    assert crl is None and error == f"{server.url}/missing.crl answered HTTP 404"
    assert fetcher.cached(f"{server.url}/missing.crl") == (None, error)
    assert (await fetcher.fetch("ldap://example.com/x", 5))[1] == "unsupported CRL URL ldap://example.com/x"


async def test_a_short_wait_leaves_the_download_running(server: SlowServer) -> None:
    server.delay = 0.5
    fetcher = CrlFetcher()
    crl, error = await fetcher.fetch(f"{server.url}/c.crl", 0.05)
    assert crl is None and "still fetching" in error
    assert fetcher.cached(f"{server.url}/c.crl") is None  # no verdict cached on the URL
    await asyncio.sleep(0.8)
    hit = fetcher.cached(f"{server.url}/c.crl")
    assert hit is not None and hit[0] is not None and server.hits == 1


@pytest.mark.parametrize("entries", [5_000, 20_000], ids=["160KB", "640KB"])
@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "until-close"])
async def test_large_crls_are_read_whole_and_parsed(
    server: SlowServer, pki: Pki, ca: tuple[Issued, Issued, Issued, Issued], entries: int, send_length: bool
) -> None:
    """Real CAs publish CRLs of hundreds of KB: far more than one network read."""
    _, intermediate, revoked, _ = ca
    body = pki.crl(f"rev-large-{entries}", intermediate, revoked=[revoked], padding=entries).read_bytes()
    assert len(body) > (155_000 if entries == 5_000 else 620_000)
    server.bodies["/large.crl"] = body
    server.send_length = send_length
    crl, error = await CrlFetcher().fetch(f"{server.url}/large.crl", 10)
    assert error == "" and crl is not None
    assert len(crl.revoked) == entries + 1 and revoked.cert.serial_number in crl.revoked


@pytest.mark.parametrize("send_length", [True, False], ids=["content-length", "until-close"])
async def test_a_crl_over_the_cap_is_refused_cleanly(server: SlowServer, send_length: bool) -> None:
    """Over the cap (16 MB), whether announced or not: a clear error, cached like any failure, and
    the body is never held whole."""
    server.bodies["/huge.crl"] = b"\x30" * (crl_module.MAX_BODY + 4 * 1024 * 1024)
    server.send_length = send_length
    fetcher = CrlFetcher()
    crl, error = await fetcher.fetch(f"{server.url}/huge.crl", 10)
    assert crl is None and f"larger than {crl_module.MAX_BODY} bytes" in error
    assert fetcher.cached(f"{server.url}/huge.crl") == (None, error)


async def test_the_crl_cache_is_bounded_by_entries_and_bytes(
    server: SlowServer, pki: Pki, ca: tuple[Issued, Issued, Issued, Issued]
) -> None:
    """A certificate chooses its CRL URLs: however many a broker or a /probe caller names, the cache
    keeps the most recently used within both bounds."""
    _, intermediate, _, _ = ca
    small = server.bodies["/c.crl"]
    large = pki.crl("rev-bound", intermediate, padding=5_000).read_bytes()
    for number in range(6):
        server.bodies[f"/small{number}.crl"] = small
    server.bodies["/large.crl"] = large
    per_small = crl_module.MEMORY_PER_BODY_BYTE * len(small)
    fetcher = CrlFetcher(
        cache=BoundedCache(
            "crl", max_entries=4, max_bytes=crl_module.MEMORY_PER_BODY_BYTE * len(large) + per_small
        )
    )
    for number in range(6):
        assert (await fetcher.fetch(f"{server.url}/small{number}.crl", 5))[0] is not None
    assert fetcher.size().entries == 4 and fetcher.size().bytes == 4 * per_small  # the entry bound
    assert fetcher.cached(f"{server.url}/small0.crl") is None
    assert fetcher.cached(f"{server.url}/small5.crl") is not None
    assert (await fetcher.fetch(f"{server.url}/large.crl", 5))[0] is not None
    size = fetcher.size()  # the byte bound: the large CRL pushed all but one small one out
    assert size.bytes <= fetcher.cache.max_bytes and size.entries == 2
    assert fetcher.cached(f"{server.url}/large.crl") is not None
    assert fetcher.cached(f"{server.url}/small5.crl") is not None  # the most recently used stays


def test_bounded_cache_expiry_and_oversize_entries() -> None:
    cache: BoundedCache[str, int] = BoundedCache("t", max_entries=10, max_bytes=100)
    cache.put("a", 1, size=10, expires=5.0)
    assert cache.get("a", 4.0) == 1 and cache.get("a", 5.0) is None  # expired: gone, bytes returned
    assert cache.size() == CacheSize("t", 0, 0)
    cache.put("big", 2, size=101, expires=9.0)  # larger than the whole cache: not kept
    assert cache.get("big", 0.0) is None and len(cache) == 0
    cache.put("b", 3, size=60, expires=9.0)
    cache.put("b", 4, size=30, expires=9.0)  # replaced: counted once
    assert cache.size().bytes == 30 and cache.get("b", 0.0) == 4


# --------------------------------------------------------------------------------------------------
# The certificate file reader


def test_certificate_file_reader(tmp_path: Path, ca: tuple[Issued, Issued, Issued, Issued]) -> None:
    _, intermediate, revoked, _ = ca
    chain = tmp_path / "fullchain.pem"
    chain.write_bytes(revoked.cert_path.read_bytes() + intermediate.cert_path.read_bytes())
    read = files.read_certificate_file(str(chain))
    assert read.error == "" and len(read.certificates) == 2 and read.modified > 0
    assert read.certificates[0] == parsed(revoked)

    der = tmp_path / "cert.der"
    der.write_bytes(revoked.cert.public_bytes(Encoding.DER))
    assert files.read_certificate_file(str(der)).certificates == (parsed(revoked),)

    combined = tmp_path / "combined.pem"  # key first, then the certificate (haproxy style)
    combined.write_bytes(revoked.key_path.read_bytes() + revoked.cert_path.read_bytes())
    assert files.read_certificate_file(str(combined)).certificates == (parsed(revoked),)

    assert (
        files.read_certificate_file(str(tmp_path)).error
        == f"{tmp_path}: is a directory, not a certificate file"
    )
    assert (
        files.read_certificate_file(str(tmp_path / "none.pem")).error == f"{tmp_path}/none.pem: no such file"
    )
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"x" * (files.MAX_CERTIFICATE_FILE + 1))
    assert "larger than" in files.read_certificate_file(str(huge)).error


def test_rewritten_in_place_is_seen_at_once(
    tmp_path: Path, ca: tuple[Issued, Issued, Issued, Issued]
) -> None:
    """Same path, same size, same second: the content decides, not a (mtime, size) stamp."""
    _, _, revoked, kept = ca
    path = tmp_path / "server.crt"
    path.write_bytes(revoked.cert_path.read_bytes())
    first = files.read_certificate_file(str(path)).certificates[0]
    stat = path.stat()
    path.write_bytes(kept.cert_path.read_bytes())
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second = files.read_certificate_file(str(path)).certificates[0]
    assert first == parsed(revoked) and second == parsed(kept)


async def test_the_cache_sizes_are_exported(server: SlowServer) -> None:
    """``mqtt_cert_exporter_cache_entries`` / ``_bytes`` show what the prober's caches hold."""
    fetcher = CrlFetcher()
    await fetcher.fetch(f"{server.url}/c.crl", 5)
    await fetcher.fetch(f"{server.url}/missing.crl", 5)
    prober = Prober(crl=fetcher)
    rendered = {
        (sample.name, sample.labels["cache"]): sample.value
        for family in exporter_families(ExporterFacts(brokers=1, caches=prober.cache_sizes()))
        for sample in family.samples
        if sample.name.startswith("mqtt_cert_exporter_cache_") and sample.labels["cache"] in ("crl", "aia")
    }
    crl_bytes = crl_module.MEMORY_PER_BODY_BYTE * len(server.bodies["/c.crl"]) + crl_module.FAILURE_BYTES
    assert rendered == {
        ("mqtt_cert_exporter_cache_entries", "crl"): 2,
        ("mqtt_cert_exporter_cache_bytes", "crl"): crl_bytes,
        ("mqtt_cert_exporter_cache_entries", "aia"): 0,
        ("mqtt_cert_exporter_cache_bytes", "aia"): 0,
    }
