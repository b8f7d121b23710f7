"""A certificate's facts read in one walk over its DER, for the shapes servers send.

cryptography hands every field out as new Python objects (names and their attributes, every extension,
the public key, dates); making them was most of a new leaf's first probe beyond the handshake
(``python -m bench.firstprobe``). Here the fields ``CertFacts`` holds are read straight from the bytes.
Any other shape -- a multi-valued RDN, a BMPString, an RSA-PSS or DSA key, a compressed EC point, a
signature algorithm not listed here, a CRL distribution point with reasons, a duplicate extension --
answers None, and ``parse`` asks cryptography: the facts are the same either way
(tests/test_cert_fields.py holds the two readings equal, on mutated DER too).

Only for DER that cryptography loaded (strict DER: tags, lengths, OIDs and times are checked on load).
The extensions read here are checked as cryptography checks them; the others (keyUsage, policies, SCTs)
are not read, and not checked: OpenSSL judges them in the handshake. Pure.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import re

from cryptography import x509
from cryptography.x509.oid import NameOID

from mqtt_cert_exporter.results import CertFacts

#: (tag, where its content starts, where it ends)
Element = tuple[int, int, int]
#: a Name: its attributes in order, (the attribute type's OID as encoded, the value)
Attributes = tuple[tuple[bytes, str], ...]
#: (the facts, authorityKeyIdentifier's keyIdentifier, subjectKeyIdentifier)
Read = tuple[CertFacts, bytes | None, bytes | None]

BOOLEAN, INTEGER, BIT_STRING, OCTET_STRING, NULL, OID, SEQUENCE = 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x30
UTC_TIME, GENERALIZED_TIME = 0x17, 0x18
VERSION, EXTENSIONS = 0xA0, 0xA3
#: issuerUniqueID [1], subjectUniqueID [2]: allowed, not read
UNIQUE_IDS = frozenset({0x81, 0x82})
#: the string types cryptography decodes as UTF-8 (BMPString and UniversalString it decodes otherwise)
UTF8_STRINGS = frozenset({0x0C, 0x12, 0x13, 0x14, 0x16, 0x1A})
#: DistributionPoint's distributionPoint [0], DistributionPointName's fullName [0]
DISTRIBUTION_POINT = FULL_NAME = 0xA0
#: GeneralName: rfc822Name, dNSName, uniformResourceIdentifier, iPAddress
EMAIL, DNS, URI, IP = 0x81, 0x82, 0x86, 0x87


class Unusual(Exception):
    """Not a shape read here: cryptography reads the certificate."""


def oid_bytes(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER's content octets, for the tables below."""
    arcs = [int(arc) for arc in dotted.split(".")]
    encoded = bytearray()
    for arc in (arcs[0] * 40 + arcs[1], *arcs[2:]):
        septets = [arc & 0x7F]
        rest = arc >> 7
        while rest:
            septets.append(0x80 | rest & 0x7F)
            rest >>= 7
        encoded += bytes(reversed(septets))
    return bytes(encoded)


def signature_algorithm_name(oid: x509.ObjectIdentifier) -> str:
    """How cryptography names a signature algorithm (``ecdsa-with-SHA256``), else its dotted OID."""
    return getattr(oid, "_name", None) or oid.dotted_string


#: signature algorithm -> (its name, its hash): the ones servers use; RSA-PSS (parameters) is left out
_SIGNATURE_HASHES = {
    "1.2.840.113549.1.1.4": "md5",
    "1.2.840.113549.1.1.5": "sha1",
    "1.2.840.113549.1.1.14": "sha224",
    "1.2.840.113549.1.1.11": "sha256",
    "1.2.840.113549.1.1.12": "sha384",
    "1.2.840.113549.1.1.13": "sha512",
    "1.2.840.10045.4.1": "sha1",
    "1.2.840.10045.4.3.1": "sha224",
    "1.2.840.10045.4.3.2": "sha256",
    "1.2.840.10045.4.3.3": "sha384",
    "1.2.840.10045.4.3.4": "sha512",
    "1.3.101.112": "",
    "1.3.101.113": "",
}
SIGNATURES = {
    oid_bytes(dotted): (signature_algorithm_name(x509.ObjectIdentifier(dotted)), digest)
    for dotted, digest in _SIGNATURE_HASHES.items()
}
#: the RFC 4514 short names cryptography writes (the others as dotted OIDs)
SHORT_NAMES = {
    oid_bytes(oid.dotted_string): short
    for oid, short in (
        (NameOID.COMMON_NAME, "CN"),
        (NameOID.LOCALITY_NAME, "L"),
        (NameOID.STATE_OR_PROVINCE_NAME, "ST"),
        (NameOID.ORGANIZATION_NAME, "O"),
        (NameOID.ORGANIZATIONAL_UNIT_NAME, "OU"),
        (NameOID.COUNTRY_NAME, "C"),
        (NameOID.STREET_ADDRESS, "STREET"),
        (NameOID.DOMAIN_COMPONENT, "DC"),
        (NameOID.USER_ID, "UID"),
    )
}
EPOCH_DAY = dt.date(1970, 1, 1).toordinal()
#: what RFC 4514 escapes in a value (cryptography's ``_escape_dn_value``)
SPECIAL = re.compile(r'[\\"+,;<>\x00]|^[# ]| $')
COMMON_NAME = oid_bytes(NameOID.COMMON_NAME.dotted_string)

RSA_KEY = oid_bytes("1.2.840.113549.1.1.1")
EC_KEY = oid_bytes("1.2.840.10045.2.1")
#: named curve -> (our name, bits, field prime p, b of y^2 = x^3 - 3x + b)
CURVES = {
    oid_bytes("1.2.840.10045.3.1.7"): (
        "P256",
        256,
        2**256 - 2**224 + 2**192 + 2**96 - 1,
        0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B,
    ),
    oid_bytes("1.3.132.0.34"): (
        "P384",
        384,
        2**384 - 2**128 - 2**96 + 2**32 - 1,
        0xB3312FA7E23EE7E4988E056BE3F82D19181D9C6EFE8141120314088F5013875AC656398D8A2ED19D2A85C8EDD3EC2AEF,
    ),
    oid_bytes("1.3.132.0.35"): (
        "P521",
        521,
        2**521 - 1,
        0x0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00,
    ),
}
#: key algorithm -> (name, bits, key length) for the keys with no parameters
EDWARDS_KEYS = {oid_bytes("1.3.101.112"): ("Ed25519", 256, 32), oid_bytes("1.3.101.113"): ("Ed448", 456, 57)}

SUBJECT_ALTERNATIVE_NAME = oid_bytes("2.5.29.17")
BASIC_CONSTRAINTS = oid_bytes("2.5.29.19")
AUTHORITY_INFORMATION_ACCESS = oid_bytes("1.3.6.1.5.5.7.1.1")
CRL_DISTRIBUTION_POINTS = oid_bytes("2.5.29.31")
AUTHORITY_KEY_IDENTIFIER = oid_bytes("2.5.29.35")
SUBJECT_KEY_IDENTIFIER = oid_bytes("2.5.29.14")
CA_ISSUERS = oid_bytes("1.3.6.1.5.5.7.48.2")


def http_url(url: str) -> bool:
    """Whether ``url`` is one the exporter fetches (a CRL, an issuer by AIA) and keeps among a
    certificate's CRL URLs: HTTP or HTTPS, any case."""
    return url.lower().startswith(("http://", "https://"))


def read(der: bytes, fingerprint: str) -> Read | None:
    """The facts of a certificate cryptography loaded, or None when it is not of a shape read here."""
    try:
        return _read(der, fingerprint)
    except (Unusual, IndexError, ValueError):  # ValueError: UTF-8, dates, unpacking a wrong count
        return None


# --------------------------------------------------------------------------------------------------
# DER


def element(der: bytes, at: int, end: int) -> Element:
    """The element at ``at``, which must end by ``end``."""
    tag, length = der[at], der[at + 1]
    start = at + 2
    if length & 0x80:
        start, length = _long_length(der, start, length)
    stop = start + length
    if stop > end or tag & 0x1F == 0x1F:
        raise Unusual("overrun or high tag number")
    return tag, start, stop


def children(der: bytes, parent: Element) -> list[Element]:
    """The elements that fill ``parent``'s content (the walk most of the reading is: kept tight)."""
    found = []
    at, end = parent[1], parent[2]
    while at < end:
        tag, length = der[at], der[at + 1]
        start = at + 2
        if length & 0x80:
            start, length = _long_length(der, start, length)
        at = start + length
        if tag & 0x1F == 0x1F:
            raise Unusual("high tag number")
        found.append((tag, start, at))
    if at != end:
        raise Unusual("overrun")
    return found


def _long_length(der: bytes, start: int, length: int) -> tuple[int, int]:
    count = length & 0x7F
    length = int.from_bytes(der[start : start + count], "big")
    if not 0 < count <= 3 or length < 0x80 or length >> (8 * count - 8) == 0:  # DER: the shortest form
        raise Unusual("length")
    return start + count, length


def only(der: bytes, where: tuple[int, int], tag: int = SEQUENCE) -> Element:
    """The one element, of ``tag``, that fills ``der[start:end]`` (an extension's value, a key)."""
    found = element(der, *where)
    if found[2] != where[1] or found[0] != tag:
        raise Unusual("not one element of its type")
    return found


def sequences(der: bytes, parent: Element) -> list[Element]:
    """``parent``'s elements, every one a SEQUENCE (a SEQUENCE OF)."""
    found = children(der, parent)
    if any(tag != SEQUENCE for tag, _, _ in found):
        raise Unusual("not a SEQUENCE OF")
    return found


def checked_oid(raw: bytes) -> bytes:
    """``raw`` if it encodes an OBJECT IDENTIFIER (cryptography refuses the others)."""
    if (
        not raw
        or raw[-1] & 0x80
        or (
            0x80 in raw
            and any(byte == 0x80 and (at == 0 or raw[at - 1] < 0x80) for at, byte in enumerate(raw))
        )
    ):
        raise Unusual("not an OID")
    return raw


def content(der: bytes, found: Element, tag: int) -> bytes:
    if found[0] != tag:
        raise Unusual(f"tag {found[0]:#x}")
    return der[found[1] : found[2]]


def ascii_text(der: bytes, found: Element) -> str:
    raw = der[found[1] : found[2]]
    if not raw.isascii():
        raise Unusual("not ASCII")
    return raw.decode("ascii")


def integer(raw: bytes) -> int:
    """A DER INTEGER's value; OpenSSL refuses one that is not minimally encoded."""
    if not raw or (len(raw) > 1 and ((raw[0] == 0 and raw[1] < 0x80) or (raw[0] == 0xFF and raw[1] >= 0x80))):
        raise Unusual("padded integer")
    return int.from_bytes(raw, "big", signed=True)


def dotted(encoded: bytes) -> str:
    """An OBJECT IDENTIFIER's dotted form (``2.5.4.5``), as cryptography writes an attribute it has no
    short name for."""
    arcs: list[int] = []
    value = 0
    for byte in checked_oid(encoded):
        value = value << 7 | byte & 0x7F
        if not byte & 0x80:
            arcs.append(value)
            value = 0
    first = arcs[0]
    head = (0, first) if first < 40 else (1, first - 40) if first < 80 else (2, first - 80)
    return ".".join(map(str, (*head, *arcs[1:])))


# --------------------------------------------------------------------------------------------------
# The certificate


def _read(der: bytes, fingerprint: str) -> Read:
    tbs, algorithm, _signature_value = children(der, element(der, 0, len(der)))
    fields = children(der, tbs)
    versioned = fields[0][0] == VERSION
    serial, _inner_algorithm, issuer, validity, subject, key, *rest = fields[1:] if versioned else fields
    extensions: dict[bytes, tuple[int, int]] = {}
    for found in rest:
        if found[0] == EXTENSIONS and versioned and not extensions:
            extensions = _extensions(der, found)
        elif found[0] not in UNIQUE_IDS:
            raise Unusual(f"tbsCertificate field {found[0]:#x}")
    signature_name, signature_hash = _signature(der, algorithm)
    key_name, key_bits = _key(der, key)
    not_before, not_after = (_time(der, found) for found in children(der, validity))
    subject_attributes, issuer_attributes = _name(der, subject), _name(der, issuer)
    number = integer(content(der, serial, INTEGER))
    names = _alternative_names(der, extensions.get(SUBJECT_ALTERNATIVE_NAME))
    facts = CertFacts(
        fingerprint_sha256=fingerprint,
        subject=_text(subject_attributes),
        issuer=_text(issuer_attributes),
        serial=format(number, "x") if number >= 0 else "-" + format(-number, "x"),
        not_before=not_before,
        not_after=not_after,
        dns_names=names[0],
        ip_addresses=names[1],
        common_name=next((value for oid, value in subject_attributes if oid == COMMON_NAME), ""),
        key=key_name,
        key_bits=key_bits,
        signature_algorithm=signature_name,
        signature_hash=signature_hash,
        is_ca=_is_ca(der, extensions.get(BASIC_CONSTRAINTS)),
        self_issued=subject_attributes == issuer_attributes,
        ca_issuers_urls=_ca_issuers(der, extensions.get(AUTHORITY_INFORMATION_ACCESS)),
        crl_urls=_crl_urls(der, extensions.get(CRL_DISTRIBUTION_POINTS)),
    )
    return (
        facts,
        _authority_key_id(der, extensions.get(AUTHORITY_KEY_IDENTIFIER)),
        _subject_key_id(der, extensions.get(SUBJECT_KEY_IDENTIFIER)),
    )


def _signature(der: bytes, algorithm: Element) -> tuple[str, str]:
    known = SIGNATURES.get(content(der, children(der, algorithm)[0], OID))
    if known is None:
        raise Unusual("signature algorithm")
    return known


def _key(der: bytes, key: Element) -> tuple[str, int]:
    """("EC-P256", 256), ("RSA-2048", 2048), ("Ed25519", 256), as ``parse.describe_key`` names them."""
    algorithm, public = children(der, key)
    identifier, *parameters = children(der, algorithm)
    kind = content(der, identifier, OID)
    bits = content(der, public, BIT_STRING)
    if bits[:1] != b"\x00":
        raise Unusual("unused bits")
    if kind == RSA_KEY and [found[0] for found in parameters] == [NULL]:
        return _rsa(bits[1:])
    if kind == EC_KEY and len(parameters) == 1:
        return _ec(content(der, parameters[0], OID), bits[1:])
    edwards = EDWARDS_KEYS.get(kind)
    if edwards is not None and not parameters and len(bits) == 1 + edwards[2]:
        return edwards[0], edwards[1]
    raise Unusual("key algorithm")


def _rsa(key: bytes) -> tuple[str, int]:
    modulus, exponent = (
        integer(content(key, found, INTEGER)) for found in children(key, only(key, (0, len(key))))
    )
    size = modulus.bit_length()
    # the keys servers use; anything odd is for OpenSSL (through cryptography) to load or refuse
    if not (1024 <= size <= 16384 and modulus & 1 and exponent & 1 and 3 <= exponent < modulus):
        raise Unusual("RSA key")
    return f"RSA-{size}", size


def _ec(curve_oid: bytes, point: bytes) -> tuple[str, int]:
    curve = CURVES.get(curve_oid)
    if curve is None:
        raise Unusual("curve")
    name, bits, prime, b = curve
    size = (bits + 7) // 8
    if len(point) != 1 + 2 * size or point[0] != 0x04:
        raise Unusual("EC point encoding")
    x, y = int.from_bytes(point[1 : 1 + size], "big"), int.from_bytes(point[1 + size :], "big")
    # OpenSSL refuses a point off the curve when it loads the key
    if x >= prime or y >= prime or (y * y - pow(x, 3, prime) + 3 * x - b) % prime:
        raise Unusual("EC point off the curve")
    return f"EC-{name}", bits


def _time(der: bytes, found: Element) -> float:
    tag, start, end = found
    text = der[start:end]
    if tag == UTC_TIME and len(text) == 13:
        year = int(text[:2])
        year += 1900 if year >= 50 else 2000
        rest = text[2:12]
    elif tag == GENERALIZED_TIME and len(text) == 15:
        year, rest = int(text[:4]), text[4:14]
    else:
        raise Unusual("time")
    if text[-1:] != b"Z" or not text[:-1].isdigit():
        raise Unusual("time")
    hour, minute, second = int(rest[4:6]), int(rest[6:8]), int(rest[8:10])
    if hour > 23 or minute > 59 or second > 59:
        raise Unusual("time of day")
    # what datetime's timestamp() gives, without building one: the date checked, whole seconds
    days = dt.date(year, int(rest[:2]), int(rest[2:4])).toordinal() - EPOCH_DAY
    return float(days * 86400 + hour * 3600 + minute * 60 + second)


def _name(der: bytes, name: Element) -> Attributes:
    """Its attributes, one per RDN: SET { SEQUENCE { OID, value } }, every length short (a value of
    over ~120 bytes is left to cryptography)."""
    attributes = []
    at, end = name[1], name[2]
    while at < end:
        # SET (length), SEQUENCE (length), OID (length), value tag, value length: one slice
        set_tag, set_length, sequence_tag, sequence_length, oid_tag, oid_length = der[at : at + 6]
        value_at = at + 6 + oid_length
        value_tag, value_length = der[value_at], der[value_at + 1]
        if (
            (set_tag, sequence_tag, oid_tag) != (0x31, SEQUENCE, OID)
            or set_length != sequence_length + 2
            or sequence_length != oid_length + value_length + 4
            or (set_length | value_length) & 0x80
            or value_tag not in UTF8_STRINGS
        ):
            raise Unusual("name attribute")
        attributes.append(
            (der[at + 6 : value_at], der[value_at + 2 : value_at + 2 + value_length].decode("utf-8"))
        )
        at += 2 + set_length
    if at != end:
        raise Unusual("overrun")
    return tuple(attributes)


def _text(attributes: Attributes) -> str:
    """RFC 4514, as cryptography's ``Name.rfc4514_string`` writes it."""
    return ",".join(
        f"{SHORT_NAMES.get(oid) or dotted(oid)}={_escaped(value)}" for oid, value in reversed(attributes)
    )


def _escaped(value: str) -> str:
    if not SPECIAL.search(value):
        return value
    for special in ("\\", '"', "+", ",", ";", "<", ">"):
        value = value.replace(special, "\\" + special)
    value = value.replace("\0", "\\00")
    if value[0] == "#" or (value[0] == " " and len(value) > 1):
        value = "\\" + value
    if value[-1] == " ":
        value = value[:-1] + "\\ "
    return value


# --------------------------------------------------------------------------------------------------
# Extensions


def _extensions(der: bytes, container: Element) -> dict[bytes, tuple[int, int]]:
    """Each extension's OID -> where its value's DER lies."""
    (sequence,) = children(der, container)
    found: dict[bytes, tuple[int, int]] = {}
    for _, at, end in children(der, sequence):
        # Extension: OID (short), critical BOOLEAN (optional), OCTET STRING
        oid_tag, oid_length = der[at], der[at + 1]
        oid = checked_oid(der[at + 2 : at + 2 + oid_length])
        value = element(der, at + 2 + oid_length, end)
        if value[0] == BOOLEAN:  # critical: TRUE (strict DER omits the default, FALSE)
            if der[value[1] : value[2]] != b"\xff":
                raise Unusual("critical")
            value = element(der, value[2], end)
        if oid_tag != OID or oid_length & 0x80 or value[0] != OCTET_STRING or value[2] != end or oid in found:
            raise Unusual("extension")
        found[oid] = (value[1], value[2])
    return found


def _alternative_names(der: bytes, where: tuple[int, int] | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if where is None:
        return (), ()
    dns: list[str] = []
    ips: list[str] = []
    for name in children(der, only(der, where)):
        if name[0] == DNS:
            dns.append(ascii_text(der, name))
        elif name[0] == IP:
            ips.append(_ip(der[name[1] : name[2]]))
        elif name[0] in (EMAIL, URI):
            ascii_text(der, name)
        else:
            raise Unusual(f"general name {name[0]:#x}")
    return tuple(dns), tuple(ips)


def _ip(raw: bytes) -> str:
    if len(raw) == 4:
        return ".".join(map(str, raw))
    if len(raw) == 16:
        return _ipv6(raw)
    raise Unusual("IP address length")


@functools.lru_cache(maxsize=1024)
def _ipv6(raw: bytes) -> str:
    """As ``ipaddress`` writes it (as cryptography's objects give it), once per address: a fleet's
    certificates name the same few."""
    return str(ipaddress.IPv6Address(raw))


def _is_ca(der: bytes, where: tuple[int, int] | None) -> bool:
    if where is None:
        return False
    parts = children(der, only(der, where))
    ca = bool(parts) and parts[0][0] == BOOLEAN
    if ca and content(der, parts[0], BOOLEAN) != b"\xff":  # FALSE is the default: strict DER omits it
        raise Unusual("basicConstraints")
    length = parts[1:] if ca else parts
    if length and (not ca or len(length) > 1 or integer(content(der, length[0], INTEGER)) < 0):
        raise Unusual("basicConstraints pathLenConstraint")
    return ca


def _ca_issuers(der: bytes, where: tuple[int, int] | None) -> tuple[str, ...]:
    if where is None:
        return ()
    urls = []
    for description in sequences(der, only(der, where)):
        method, location = children(der, description)
        if location[0] != URI:
            raise Unusual("accessLocation")
        url = ascii_text(der, location)
        if checked_oid(content(der, method, OID)) == CA_ISSUERS:
            urls.append(url)
    return tuple(urls)


def _crl_urls(der: bytes, where: tuple[int, int] | None) -> tuple[str, ...]:
    """HTTP(S) URLs of the full names (as ``parse``: relative names and LDAP are skipped)."""
    if where is None:
        return ()
    urls = []
    for point in sequences(der, only(der, where)):
        (name,) = children(der, point)  # reasons and cRLIssuer: cryptography reads them
        if name[0] != DISTRIBUTION_POINT:
            raise Unusual("distributionPoint")
        (full,) = children(der, name)
        if full[0] != FULL_NAME:  # a name relative to the CRL issuer
            raise Unusual("distributionPoint")
        for general in children(der, full):
            if general[0] != URI:
                raise Unusual("distributionPoint name")
            url = ascii_text(der, general)
            if http_url(url):
                urls.append(url)
    return tuple(urls)


def _authority_key_id(der: bytes, where: tuple[int, int] | None) -> bytes | None:
    if where is None:
        return None
    parts = children(der, only(der, where))
    if [found[0] for found in parts] != [0x80]:  # keyIdentifier alone
        raise Unusual("authorityKeyIdentifier")
    return der[parts[0][1] : parts[0][2]]


def _subject_key_id(der: bytes, where: tuple[int, int] | None) -> bytes | None:
    return None if where is None else content(der, only(der, where, OCTET_STRING), OCTET_STRING)
