"""``/broker/<name>``: the `check` report of a broker's latest result, as HTML. Pure.

The verdict, the findings and their fixes come from the ``Report`` (``exporter.report``), as `check`
shows them; the facts (chain, trust, timings, MQTT, lifecycle) from the ``ProbeResult`` it assessed.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

from mqtt_cert_exporter.connack import connack_meaning
from mqtt_cert_exporter.report import Report, days_left, display_name
from mqtt_cert_exporter.results import CertFacts, ProbeResult, RevocationStatus
from mqtt_cert_exporter.web.status.fleet import Row
from mqtt_cert_exporter.web.status.fleet_page import REFRESH_SECONDS, badge, finding_list
from mqtt_cert_exporter.web.status.html import (
    Html,
    Links,
    age,
    date_time,
    days_bar,
    days_text,
    el,
    join,
    page,
    void,
)

#: The broker page lives one level below ``/``.
ROOT = "../"


def facts(*pairs: tuple[str, Html | str | None]) -> Html:
    """A definition list; pairs whose value is None are left out."""
    items = [join([el("dt", label), el("dd", value)]) for label, value in pairs if value is not None]
    return el("dl", *items, class_="facts")


def findings_html(row: Row) -> Html:
    if not row.items:
        return el("p", "Nothing wrong: trusted chain, MQTT connection accepted.", class_="muted")
    return finding_list(row.items)


def _store(report: Report) -> str:
    ca_file = report.broker.tls.ca_file
    return f"the CA file {ca_file}" if ca_file else "the system trust store"


def connection_html(report: Report, now: float) -> Html:
    result = report.result
    tls = result.tls
    timings = ", ".join(f"{phase.value} {seconds * 1000:.1f} ms" for phase, seconds in result.durations)
    websocket = None
    if result.websocket is not None:
        websocket = (
            f"HTTP {result.websocket.status_code}, subprotocol {result.websocket.subprotocol or 'none'}"
        )
    roundtrip = None
    if result.roundtrip is not None:
        trip = result.roundtrip
        if trip.success and trip.latency is not None:
            roundtrip = f"our message came back in {trip.latency * 1000:.1f} ms"
        elif trip.failure is not None:
            roundtrip = (
                f"failed: {trip.failure.stage.value}/{trip.failure.reason.value} {trip.failure.detail}"
            )
    return facts(
        ("address", result.address),
        ("probed IP", result.ip or "not resolved"),
        ("server name", report.broker.server_name),
        (
            "TLS",
            f"{tls.version or 'version unknown'}, {tls.cipher or 'cipher unknown'}"
            if tls
            else "no TLS session",
        ),
        ("ALPN", tls.alpn_protocol if tls and tls.alpn_protocol else None),
        ("checked", f"{date_time(result.finished)} ({age(now - result.finished)})"),
        ("timings", timings or None),
        ("WebSocket", websocket),
        ("round trip", roundtrip),
    )


def _names(cert: CertFacts) -> str:
    names = (*cert.dns_names, *cert.ip_addresses)
    return ", ".join(names) if names else "none (no subjectAltName)"


def chain_html(report: Report) -> Html:
    tls = report.result.tls
    if tls is None or not tls.chain:
        return el("p", "No certificate was received.", class_="muted")
    header = ("#", "subject", "issuer", "valid from", "valid until", "days left", "key", "signature", "names")
    rows = []
    for position, cert in enumerate(tls.chain):
        if cert.parse_error:
            rows.append(el("tr", el("td", position), el("td", f"unparseable: {cert.parse_error}", colspan=8)))
            continue
        left = days_left(cert, report.now)
        rows.append(
            el(
                "tr",
                el("td", position),
                el(
                    "td",
                    cert.subject,
                    el("div", el("small", f"SHA-256 {cert.fingerprint_sha256}")),
                    class_="name",
                ),
                el("td", cert.issuer, class_="name"),
                el("td", date_time(cert.not_before)),
                el("td", date_time(cert.not_after)),
                el("td", days_bar(left, report.warn_days), " ", days_text(left)),
                el("td", cert.key),
                el("td", cert.signature_algorithm),
                el("td", _names(cert), el("div", el("small", f"serial {cert.serial}")), class_="name"),
            )
        )
    head = el("thead", el("tr", *(el("th", title) for title in header)))
    return el("div", el("table", head, el("tbody", *rows), class_="chain"), style="overflow-x:auto")


def trust_html(report: Report) -> Html:
    tls = report.result.tls
    if tls is None or not tls.chain:
        return el("p", "Not judged: no certificate was received.", class_="muted")
    verdict = tls.verdict
    if verdict.trusted:
        text = join([el("span", "trusted", class_="kind ok"), f" by {_store(report)}"])
    else:
        problems = ", ".join(problem.value for problem in verdict.problems) or "untrusted"
        text = join([el("span", "NOT trusted", class_="kind critical"), f" by {_store(report)}: {problems}"])
    anchor = None
    if verdict.anchor is not None and not verdict.anchor.parse_error:
        left = days_left(verdict.anchor, report.now)
        anchor = (
            f"{verdict.anchor.subject}, valid until {date_time(verdict.anchor.not_after)} ({days_text(left)})"
        )
    completed = ", ".join(display_name(cert.subject) for cert in verdict.completed_with) or None
    return facts(
        ("verdict", text),
        ("OpenSSL", f"{verdict.verify_code} {verdict.verify_message}" if verdict.verify_message else None),
        ("anchor", anchor),
        ("completed with", completed),
    )


def mqtt_html(result: ProbeResult) -> Html:
    mqtt = result.mqtt
    if mqtt is None or mqtt.connack_code is None:
        return el("p", "No CONNACK.", class_="muted")
    text = f"MQTT {mqtt.protocol}, CONNACK {mqtt.connack_code} ({connack_meaning(mqtt.protocol, mqtt.connack_code)})"
    if mqtt.unverified_connection:
        text += " over a connection that ignored the certificate"
        if mqtt.accepted:
            text += ": the broker is up, only the certificate needs fixing"
    return el("p", text)


def _cert_line(cert: CertFacts, now: float) -> str:
    if cert.parse_error:
        return f"unparseable ({cert.parse_error})"
    left = days_left(cert, now)
    return f"{cert.subject}, issued {date_time(cert.not_before)}, valid until {date_time(cert.not_after)} ({days_text(left)})"


def lifecycle_html(report: Report) -> Html:
    result, now = report.result, report.now
    served = None
    if result.served_file is not None:
        file = result.served_file
        match = {True: "the certificate served", False: "NOT the certificate served", None: "not compared"}
        where = (
            f"{file.path} (-> {file.resolved_path})"
            if file.resolved_path and file.resolved_path != file.path
            else file.path
        )
        what = _cert_line(file.leaf, now) if file.leaf is not None else "no certificate read"
        served = f"{where}: {match[file.matches]}; the file's: {what}" + (
            f"; note: {file.error}" if file.error else ""
        )
    client = None
    if result.client_cert is not None:
        client = f"{report.broker.tls.cert_file or ''}: {_cert_line(result.client_cert, now)}".lstrip(": ")
    crl: Html | None = None
    if result.revocation is not None:
        checks = result.revocation.checks
        if not checks:
            crl = el("span", "not checked (no CRL distribution point in the chain)")
        else:
            crl = el(
                "ul",
                *(
                    el(
                        "li",
                        f"certificate {check.position}: ",
                        el(
                            "span",
                            check.status.value,
                            class_="kind critical" if check.status is RevocationStatus.REVOKED else "kind",
                        ),
                        f" - {check.detail}" if check.detail else None,
                    )
                    for check in checks
                ),
            )
    legacy = None
    if result.legacy_tls is not None:
        accepted = result.legacy_tls.accepted
        legacy = {
            True: f"still accepts {result.legacy_tls.version or 'TLS 1.0/1.1'} (deprecated by RFC 8996)",
            False: "TLS 1.0/1.1 refused",
            None: f"could not tell whether TLS 1.0/1.1 is accepted {result.legacy_tls.detail}".rstrip(),
        }[accepted]
    lints = None
    if result.lints:
        lints = el(
            "ul",
            *(
                el("li", el("span", lint.lint.value, class_="kind warning"), ": ", lint.detail)
                for lint in result.lints
            ),
        )
    if all(value is None for value in (served, client, crl, legacy, lints)):
        return el("p", "Nothing configured or found around the chain.", class_="muted")
    return facts(
        ("served file", served),
        ("client certificate", client),
        ("CRL", crl),
        ("legacy TLS", legacy),
        ("lints", lints),
    )


def report_html(row: Row, now: float) -> Html:
    report = row.report
    assert report is not None
    result = report.result
    title = f"address {row.address_label}" if row.address_label else "latest probe"
    stale = (
        el(
            "p",
            el("span", "stale: ", class_="kind critical"),
            "this result is older than three probe intervals",
        )
        if row.stale(now)
        else None
    )
    return el(
        "section",
        el("h2", badge(row.status), " ", title),
        stale,
        findings_html(row),
        el("h2", "Connection"),
        connection_html(report, now),
        el("h2", "Certificate chain"),
        chain_html(report),
        el("h2", "Trust"),
        trust_html(report),
        el("h2", "MQTT"),
        mqtt_html(result),
        el("h2", "Around the chain"),
        lifecycle_html(report),
        el("details", el("summary", "as `check` prints it"), el("pre", report.text())),
    )


def broker_page(name: str, rows: Sequence[Row], *, now: float, probe: bool) -> str:
    """Every result of one broker (one, or one per address with ``addresses: all``)."""
    links = Links(root=ROOT, probe=probe)
    json_link = el("a", "JSON", href=f"{ROOT}api/v1/brokers/{quote(name, safe='')}")
    heading = el("h1", name, class_="name")
    if not rows:
        return page(name, join([heading, el("p", "Unknown broker.")]), links)
    first = rows[0]
    intro = el(
        "p",
        first.broker.address,
        f", probed every {first.broker.interval:g} s; warning threshold {first.report.warn_days:g} days. "
        if first.report
        else f", probed every {first.broker.interval:g} s. ",
        json_link,
        class_="muted name",
    )
    if first.result is None:
        body = join([heading, intro, el("p", "Not probed yet: waiting for the first probe.")])
        return page(name, body, links, refresh_seconds=REFRESH_SECONDS)
    sections = [report_html(row, now) for row in rows]
    return page(
        f"{first.status.upper()} {name}",
        join([heading, intro, *sections, void("hr")]),
        links,
        refresh_seconds=REFRESH_SECONDS,
    )
