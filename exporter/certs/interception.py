"""Is a chain issued by a TLS-intercepting proxy or firewall? Pure: names in, the product out.

Middleboxes that inspect TLS (corporate firewalls, secure web gateways, antivirus products) answer the
client's handshake themselves, with a certificate for the broker's name minted by their own CA. To the
exporter that looks like an unknown CA or a self-signed root, and the usual advice ("give clients this
root") is wrong: the broker is fine, the path to it is not. These are the CA names such products put in
their certificates by default (an administrator can rename them; then nothing matches).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from mqtt_cert_exporter.results import CertFacts

#: (pattern on a subject or issuer, the product as the fix names it)
_PRODUCTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), product)
    for pattern, product in (
        (r"\bZscaler\b", "Zscaler"),
        (r"\bFortinet\b|\bFortiGate\b|\bFGT[0-9A-Z]{2,}", "Fortinet FortiGate"),
        (r"Palo Alto Networks|\bPAN-OS\b", "Palo Alto Networks"),
        (r"\bSophos\b", "Sophos"),
        (r"Cisco Umbrella|\bOpenDNS\b", "Cisco Umbrella"),
        (r"\bBlue ?Coat\b|\bSymantec Web Security\b", "Blue Coat / Symantec ProxySG"),
        (r"\bNetskope\b", "Netskope"),
        (r"\bForcepoint\b|\bWebsense\b", "Forcepoint"),
        (r"\bBarracuda\b", "Barracuda"),
        (r"\bCheck Point\b", "Check Point"),
        (r"\bKaspersky\b", "Kaspersky"),
        (r"\bAvast\b|\bAVG\b", "Avast/AVG"),
        (r"\bESET\b", "ESET"),
        (r"\bBitdefender\b", "Bitdefender"),
        (r"\bmitmproxy\b", "mitmproxy"),
        (r"\bPortSwigger\b|\bBurp\b", "Burp Suite"),
    )
)


def interception_product(chain: Iterable[CertFacts]) -> str:
    """The inspecting product whose CA issued (a certificate of) the chain; "" when none is recognized."""
    for cert in chain:
        for name in (cert.issuer, cert.subject):
            for pattern, product in _PRODUCTS:
                if pattern.search(name):
                    return product
    return ""
