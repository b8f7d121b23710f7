"""A certificate factory for the lab: roots, intermediates and leaves written as PEM files.

Everything is generated fresh (nothing is cached across processes); EC P-256 keys by default so a
whole test PKI takes milliseconds. Private keys are written unencrypted with mode 0644: they are
throw-away test keys and a broker that dropped privileges must still be able to read them.

SHA-1 signatures: cryptography (>= 42 or so) refuses to sign with SHA-1, so :meth:`Pki.leaf_sha1`
builds a CSR carrying all the extensions and has the ``openssl`` command sign it
(``openssl x509 -req -sha1 -copy_extensions copyall``), which OpenSSL 3.0 does without any
configuration change.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_WEAK_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {"sha1": hashes.SHA1, "md5": hashes.MD5}

KEY_TYPES = ("ec256", "ec384", "rsa512", "rsa1024", "rsa2048", "ed25519")
ORGANIZATION = "mqtt-cert-exporter lab"
# Certificates start a little in the past so clocks that disagree by a few minutes still accept them.
BACKDATE = timedelta(minutes=5)
#: serials of the padding entries of a large CRL (``Pki.crl(padding=...)``): far from any issued serial
PADDING_SERIALS = 1 << 100


@dataclass(frozen=True)
class Issued:
    """One certificate with its key, both written to disk as PEM."""

    cert: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path

    @property
    def name(self) -> str:
        """The file stem this certificate was written under."""
        return self.cert_path.name.removesuffix(".pem")

    def chain_path(self, *others: Issued) -> Path:
        """Write this certificate followed by ``others`` (e.g. intermediates) to a new PEM file."""
        stem = "+".join([self.name, *(other.name for other in others)])
        return _write_pem(self.cert_path.with_name(f"{stem}.chain.pem"), [self, *others])


def generate_key(key: str) -> PrivateKey:
    """A fresh private key of one of :data:`KEY_TYPES`."""
    match key:
        case "ec256":
            return ec.generate_private_key(ec.SECP256R1())
        case "ec384":
            return ec.generate_private_key(ec.SECP384R1())
        case "rsa512":
            return _openssl_rsa512()
        case "rsa1024":
            return rsa.generate_private_key(public_exponent=65537, key_size=1024)
        case "rsa2048":
            return rsa.generate_private_key(public_exponent=65537, key_size=2048)
        case "ed25519":
            return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {key!r}; expected one of {', '.join(KEY_TYPES)}")


def _openssl_rsa512() -> rsa.RSAPrivateKey:
    """cryptography will not generate an RSA key under 1024 bits; the openssl command will (found in the
    wild: a key too small for TLS 1.3)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("an rsa512 key needs the openssl command (Debian package openssl)")
    pem = subprocess.run([openssl, "genrsa", "512"], capture_output=True, check=True).stdout
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _signature_hash(signer: PrivateKey) -> hashes.SHA256 | None:
    # Ed25519 signs the message itself: no separate hash.
    return None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256()


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
        ]
    )


def _write_pem(path: Path, certs: Iterable[Issued]) -> Path:
    path.write_bytes(b"".join(item.cert.public_bytes(serialization.Encoding.PEM) for item in certs))
    return path


def _validity(
    not_before: datetime | None, not_after: datetime | None, days: int
) -> tuple[datetime, datetime]:
    """Resolve the validity window: explicit bounds win, ``days`` fills in the missing one."""
    lifetime = timedelta(days=days)
    if not_before is None and not_after is None:
        now = datetime.now(UTC)
        not_before, not_after = now - BACKDATE, now + lifetime
    elif not_before is None:
        assert not_after is not None
        not_before = not_after - lifetime
    elif not_after is None:
        not_after = not_before + lifetime
    if not_before >= not_after:
        raise ValueError(f"not_before {not_before} is not before not_after {not_after}")
    return not_before, not_after


class Pki:
    """Issue certificates into ``directory`` (created if needed); file names derive from ``name``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ public API

    def root(self, name: str, *, days: int = 3650, key: str = "ec256") -> Issued:
        """A self-signed CA certificate."""
        private_key = generate_key(key)
        builder = self._builder(
            name,
            private_key,
            issuer=None,
            validity=_validity(None, None, days),
            extensions=self._ca_extensions(path_length=None),
        )
        return self._save(name, builder.sign(private_key, _signature_hash(private_key)), private_key)

    def intermediate(
        self,
        name: str,
        issuer: Issued,
        *,
        days: int = 1825,
        key: str = "ec256",
        crl_distribution_points: Iterable[str] = (),
        signing_only: bool = False,
    ) -> Issued:
        """A CA certificate signed by ``issuer`` that may only sign leaves (pathLen 0); ``signing_only``:
        keyUsage keyCertSign and cRLSign alone (no digitalSignature), as many CAs issue them."""
        private_key = generate_key(key)
        builder = self._builder(
            name,
            private_key,
            issuer=issuer,
            validity=_validity(None, None, days),
            extensions=[
                *self._ca_extensions(path_length=0, digital_signature=not signing_only),
                *_crl_extension(crl_distribution_points),
            ],
        )
        return self._save(name, builder.sign(issuer.key, _signature_hash(issuer.key)), private_key)

    def leaf(
        self,
        name: str,
        issuer: Issued | None,
        *,
        dns_names: Iterable[str] = ("localhost",),
        ip_addresses: Iterable[str] = ("127.0.0.1", "::1"),
        not_before: datetime | None = None,
        not_after: datetime | None = None,
        days: int = 90,
        key: str = "ec256",
        common_name: str | None = None,
        aia_ca_issuers_url: str | None = None,
        client: bool = False,
        crl_distribution_points: Iterable[str] = (),
    ) -> Issued:
        """An end-entity certificate (serverAuth, or clientAuth with ``client=True``).

        ``issuer=None`` makes a self-signed leaf (not a CA). ``not_before``/``not_after`` override
        ``days`` for expired, not-yet-valid or soon-expiring certificates; give only one and ``days``
        sets the other. Naive datetimes are taken as UTC.
        """
        private_key = generate_key(key)
        builder = self._builder(
            common_name or name,
            private_key,
            issuer=issuer,
            validity=_validity(not_before, not_after, days),
            extensions=[
                *self._leaf_extensions(private_key, dns_names, ip_addresses, aia_ca_issuers_url, client),
                *_crl_extension(crl_distribution_points),
            ],
        )
        signer = private_key if issuer is None else issuer.key
        return self._save(name, builder.sign(signer, _signature_hash(signer)), private_key)

    def leaf_sha1(
        self,
        name: str,
        issuer: Issued | None,
        *,
        dns_names: Iterable[str] = ("localhost",),
        ip_addresses: Iterable[str] = ("127.0.0.1", "::1"),
        days: int = 90,
        key: str = "ec256",
        common_name: str | None = None,
        aia_ca_issuers_url: str | None = None,
        client: bool = False,
        digest: str = "sha1",
    ) -> Issued:
        """Like :meth:`leaf`, but signed with SHA-1 (by the ``openssl`` command; valid from now);
        ``digest="md5"`` for MD5; ``issuer=None`` for a self-signed one.

        The issuer must have an EC or RSA key (Ed25519 has no SHA-1 variant).
        """
        if issuer is not None and isinstance(issuer.key, ed25519.Ed25519PrivateKey):
            raise ValueError("an Ed25519 issuer cannot sign with SHA-1")
        if digest not in _WEAK_DIGESTS:
            raise ValueError(f"digest must be one of {', '.join(_WEAK_DIGESTS)}")
        openssl = shutil.which("openssl")
        if openssl is None:
            raise RuntimeError("leaf_sha1 needs the openssl command (Debian package openssl)")
        private_key = generate_key(key)
        csr_builder = x509.CertificateSigningRequestBuilder().subject_name(_name(common_name or name))
        subject_key_id = x509.SubjectKeyIdentifier.from_public_key(private_key.public_key())
        authority = (
            self._authority_key_id(issuer)
            if issuer is not None
            else x509.AuthorityKeyIdentifier(subject_key_id.digest, None, None)
        )
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (subject_key_id, False),
            (authority, False),
            *self._leaf_extensions(private_key, dns_names, ip_addresses, aia_ca_issuers_url, client),
        ]
        for extension, critical in extensions:
            csr_builder = csr_builder.add_extension(extension, critical=critical)
        csr = csr_builder.sign(private_key, _signature_hash(private_key))

        stem = self._stem(name)
        csr_path = self.directory / f"{stem}.csr"
        cert_path = self.directory / f"{stem}.pem"
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        if issuer is None:
            key_path = self.directory / f"{stem}.key"
            key_path.write_bytes(_private_pem(private_key))
            signer = ["-signkey", str(key_path)]
        else:
            signer = ["-CA", str(issuer.cert_path), "-CAkey", str(issuer.key_path)]
        command = [
            openssl, "x509", "-req", f"-{digest}",
            "-in", str(csr_path),
            *signer,
            "-set_serial", hex(x509.random_serial_number()),
            "-days", str(days),
            "-copy_extensions", "copyall",
            "-out", str(cert_path),
        ]  # fmt: skip
        # RHEL-family crypto policies refuse SHA-1 signatures unless this is set; ignored elsewhere.
        env = {**os.environ, "OPENSSL_ENABLE_SHA1_SIGNATURES": "1"}
        result = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        csr_path.unlink()
        if result.returncode != 0:
            raise RuntimeError(f"openssl could not sign {name!r} with {digest}: {result.stderr.strip()}")
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if not isinstance(cert.signature_hash_algorithm, _WEAK_DIGESTS[digest]):
            raise RuntimeError(f"openssl signed {name!r} with {cert.signature_hash_algorithm}, not {digest}")
        return self._save(name, cert, private_key)

    def crl(
        self,
        name: str,
        issuer: Issued,
        *,
        revoked: Iterable[Issued] = (),
        next_update: datetime | None = None,
        last_update: datetime | None = None,
        reason: x509.ReasonFlags | None = x509.ReasonFlags.key_compromise,
        signer: Issued | None = None,
        pem: bool = False,
        padding: int = 0,
    ) -> Path:
        """A CRL issued by ``issuer`` that revokes ``revoked``, written to ``<name>.crl`` (DER, or PEM).

        ``last_update`` defaults to a little in the past, ``next_update`` to 7 days after it (a past
        ``next_update`` makes a stale CRL). ``signer`` signs with another key under the issuer's name
        (a CRL whose signature does not verify). ``padding`` revokes that many more serials, issued to
        nobody, to make the CRL as large as a real CA's (about 32 bytes each).
        """
        this_update = last_update or datetime.now(UTC) - BACKDATE
        entries: list[x509.RevokedCertificate] = []
        for item in revoked:
            entry = (
                x509.RevokedCertificateBuilder()
                .serial_number(item.cert.serial_number)
                .revocation_date(this_update)
            )
            if reason is not None:
                entry = entry.add_extension(x509.CRLReason(reason), critical=False)
            entries.append(entry.build())
        entries.extend(
            x509.RevokedCertificateBuilder()
            .serial_number(PADDING_SERIALS + number)
            .revocation_date(this_update)
            .build()
            for number in range(padding)
        )
        # One constructor call: add_revoked_certificate copies the builder, quadratic for a large CRL.
        builder = x509.CertificateRevocationListBuilder(
            issuer_name=issuer.cert.subject,
            last_update=this_update,
            next_update=next_update or this_update + timedelta(days=7),
            extensions=[
                x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(1)),
                x509.Extension(x509.AuthorityKeyIdentifier.oid, False, self._authority_key_id(issuer)),
            ],
            revoked_certificates=entries,
        )
        key = (signer or issuer).key
        crl = builder.sign(key, _signature_hash(key))
        path = self.directory / f"{self._stem(name)}.crl"
        encoding = serialization.Encoding.PEM if pem else serialization.Encoding.DER
        path.write_bytes(crl.public_bytes(encoding))
        return path

    def bundle(self, name: str, *certs: Issued) -> Path:
        """A CA file holding several certificates (e.g. two roots)."""
        return _write_pem(self.directory / f"{self._stem(name)}.bundle.pem", certs)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _stem(name: str) -> str:
        # No dots or '+': keeps "<stem>.pem" apart from "<a>+<b>.chain.pem" and "<x>.bundle.pem".
        stem = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
        if not stem:
            raise ValueError(f"cannot derive a file name from {name!r}")
        return stem

    @staticmethod
    def _authority_key_id(issuer: Issued) -> x509.AuthorityKeyIdentifier:
        try:
            ski = issuer.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        except x509.ExtensionNotFound:
            return x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key())
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)

    def _builder(
        self,
        common_name: str,
        private_key: PrivateKey,
        *,
        issuer: Issued | None,
        validity: tuple[datetime, datetime],
        extensions: list[tuple[x509.ExtensionType, bool]],
    ) -> x509.CertificateBuilder:
        subject = _name(common_name)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject if issuer is None else issuer.cert.subject)
            .public_key(private_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(validity[0])
            .not_valid_after(validity[1])
        )
        ski = x509.SubjectKeyIdentifier.from_public_key(private_key.public_key())
        builder = builder.add_extension(ski, critical=False)
        if issuer is not None:
            builder = builder.add_extension(self._authority_key_id(issuer), critical=False)
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder

    @staticmethod
    def _ca_extensions(
        path_length: int | None, *, digital_signature: bool = True
    ) -> list[tuple[x509.ExtensionType, bool]]:
        """CA extensions as (extension, critical)."""
        usage = x509.KeyUsage(
            digital_signature=digital_signature,
            content_commitment=False,
            key_encipherment=False,
            data_encipherment=False,
            key_agreement=False,
            key_cert_sign=True,
            crl_sign=True,
            encipher_only=False,
            decipher_only=False,
        )
        return [(x509.BasicConstraints(ca=True, path_length=path_length), True), (usage, True)]

    @staticmethod
    def _leaf_extensions(
        private_key: PrivateKey,
        dns_names: Iterable[str],
        ip_addresses: Iterable[str],
        aia_ca_issuers_url: str | None,
        client: bool,
    ) -> list[tuple[x509.ExtensionType, bool]]:
        """Leaf extensions as (extension, critical), key identifiers aside."""
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    # RSA key exchange (TLS 1.2 without ECDHE) encrypts with the certificate's key.
                    key_encipherment=isinstance(private_key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                True,
            ),
            (
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
                ),
                False,
            ),
        ]
        alt_names: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
        alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        if alt_names:
            extensions.append((x509.SubjectAlternativeName(alt_names), False))
        if aia_ca_issuers_url is not None:
            access = x509.AccessDescription(
                AuthorityInformationAccessOID.CA_ISSUERS,
                x509.UniformResourceIdentifier(aia_ca_issuers_url),
            )
            extensions.append((x509.AuthorityInformationAccess([access]), False))
        return extensions

    def _save(self, name: str, cert: x509.Certificate, private_key: PrivateKey) -> Issued:
        stem = self._stem(name)
        cert_path = self.directory / f"{stem}.pem"
        key_path = self.directory / f"{stem}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(_private_pem(private_key))
        key_path.chmod(0o644)
        return Issued(cert=cert, key=private_key, cert_path=cert_path, key_path=key_path)


def _private_pem(private_key: PrivateKey) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _crl_extension(urls: Iterable[str]) -> list[tuple[x509.ExtensionType, bool]]:
    """A CRL distribution points extension (one point per URL), or nothing when ``urls`` is empty."""
    points = [
        x509.DistributionPoint(
            full_name=[x509.UniformResourceIdentifier(url)], relative_name=None, reasons=None, crl_issuer=None
        )
        for url in urls
    ]
    return [(x509.CRLDistributionPoints(points), False)] if points else []
