"""The text report of one broker, as `check` and `demo` print it (docs/check.md, "Text output"). Pure.

Certificates choose their names: every line is escaped (controls, bidi overrides, line separators) and
cut at ``MAX_LINE_CHARS`` on its way out, so one certificate cannot split the report, steer the terminal
or make an unbounded line (issue 18.11). The JSON document has the names whole, escaped by json.dumps.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence

from mqtt_cert_exporter.connack import connack_meaning
from mqtt_cert_exporter.printable import cut, escape_controls
from mqtt_cert_exporter.report.assessment import Assessment, Status, days_left
from mqtt_cert_exporter.report.brokerfixes import tailor
from mqtt_cert_exporter.report.fixes import Finding
from mqtt_cert_exporter.report.wording import (
    chain_label,
    display_name,
    file_name,
    relative_days,
    subject_name,
    trust_store_name,
    utc_date,
    utc_date_time,
)
from mqtt_cert_exporter.results import CertFacts, LegacyTlsFacts, ProbeResult, RevocationStatus

#: Longest subject/issuer shown in the chain table; the JSON document always has them whole.
MAX_NAME_WIDTH = 40
#: Longest line of the report once escaped (a finding listing 40 SANs fits); the JSON has it whole.
MAX_LINE_CHARS = 1024


def _clip(text: str, width: int = MAX_NAME_WIDTH) -> str:
    """Escaped before it is measured, so the chain table's columns stay aligned."""
    text = escape_controls(text)
    return text if len(text) <= width else text[: width - 3] + "..."


_ANSI_CODES: Mapping[str, str] = {"bold": "1", "red": "31", "green": "32", "yellow": "33"}


class _Style:
    """ANSI styling that is a no-op unless colour was asked for.

    Styles are written as markers with a per-report random token and become escape sequences only in
    ``finish``, after the line was escaped: a certificate cannot forge a marker it cannot guess.
    """

    def __init__(self, colour: bool) -> None:
        self.colour = colour
        self._token = secrets.token_hex(8)
        self._marker = re.compile(rf"<{self._token}:([0-9;]+)>")

    def __call__(self, text: str, *styles: str) -> str:
        if not self.colour or not styles or not text:
            return text
        codes = ";".join(_ANSI_CODES[style] for style in styles)
        return f"<{self._token}:{codes}>{text}<{self._token}:0>"

    def finish(self, line: str) -> str:
        """One line of output: escaped, cut, then styled."""
        safe = escape_controls(line)
        if len(safe) > MAX_LINE_CHARS:
            safe = cut(safe, MAX_LINE_CHARS) + (f"<{self._token}:0>" if self.colour else "")
        return self._marker.sub(lambda match: f"\x1b[{match[1]}m", safe) if self.colour else safe

    def status(self, status: Status) -> str:
        colours = {
            Status.OK: "green",
            Status.WARNING: "yellow",
            Status.CRITICAL: "red",
            Status.UNKNOWN: "red",
        }
        return self(status.name, "bold", colours[status])


_LABEL_WIDTH = 9


def _line(label: str, text: str, style: _Style) -> str:
    return f"  {style(label.ljust(_LABEL_WIDTH), 'bold')}{text}"


def render_text(report: Assessment, *, colour: bool = False) -> str:
    """The text report of one broker, as `check` prints it."""
    style = _Style(colour)
    result, broker = report.result, report.broker
    lines = [
        style(f"{result.broker}", "bold")
        + (f" ({result.address})" if result.broker != result.address else "")
    ]
    probed = result.ip or "not resolved"
    lines.append(
        _line("address", f"{result.address}, probed {probed}, server name {broker.server_name}", style)
    )
    lines.append(_line("TLS", _tls_summary(result), style))
    if result.legacy_tls is not None:
        lines.append(_line("legacy", _legacy_summary(result.legacy_tls, style), style))
    if result.durations:
        timings = ", ".join(f"{phase.value} {seconds * 1000:.1f} ms" for phase, seconds in result.durations)
        lines.append(_line("timings", timings, style))
    lines += _chain_lines(report, style)
    lines += _trust_lines(report, style)
    lines += _served_file_lines(report, style)
    lines += _client_cert_lines(report, style)
    lines += _revocation_lines(report, style)
    lines.append(_line("MQTT", _mqtt_summary(report), style))
    lines.append(_line("verdict", f"{style.status(report.status)}: {report.headline}", style))
    for problem, finding in report.problems:
        lines += _finding_lines(style(problem.value, "red"), finding, style)
    if report.failure is not None:
        lines += _finding_lines(style(report.failure.kind, "red"), report.failure, style)
    if report.unverified_failure is not None:
        finding = report.unverified_failure
        label = style(finding.kind, "red") + " (even ignoring the certificate)"
        lines += _finding_lines(label, finding, style)
    for _, finding in report.revoked:
        lines += _finding_lines(style(finding.kind, "red"), finding, style)
    served = [finding for _, finding in report.lifecycle_warnings if finding.kind == "served_cert_mismatch"]
    others = [finding for _, finding in report.lifecycle_warnings if finding.kind != "served_cert_mismatch"]
    for finding in [*served, *(finding for _, finding in report.warnings), *others]:
        lines += _finding_lines(style(finding.kind, "yellow"), finding, style)
    lines += _lint_lines(report, style)
    return "\n".join(map(style.finish, lines)) + "\n"


def _finding_lines(label: str, finding: Finding, style: _Style) -> list[str]:
    indent = " " * (2 + _LABEL_WIDTH)
    return [f"{indent}- {label}: {finding.cause}", f"{indent}  {style('fix:', 'bold')} {finding.fix}"]


def _tls_summary(result: ProbeResult) -> str:
    tls = result.tls
    if tls is None:
        stage = result.failure.stage.value if result.failure else "?"
        return f"no TLS session (the probe stopped at {stage})"
    parts = [tls.version or "version unknown", tls.cipher or "cipher unknown"]
    if tls.alpn_protocol:
        parts.append(f"ALPN {tls.alpn_protocol}")
    return ", ".join(parts)


_CHAIN_HEADER = ("#", "subject", "issuer", "not after", "key", "signature")
_NOT_AFTER_COLUMN = 3


def _chain_lines(report: Assessment, style: _Style) -> list[str]:
    tls = report.result.tls
    if tls is None:
        return []
    if not tls.chain:
        return [_line("chain", "no certificate received", style)]
    #: the chain as sent, then the trust anchor that verified it (from the store, usually not sent)
    certs: list[tuple[str, CertFacts]] = [(str(position), cert) for position, cert in enumerate(tls.chain)]
    if tls.verdict.anchor is not None:
        certs.append(("anchor", tls.verdict.anchor))
    rows = [_chain_row(label, cert, report.now) for label, cert in certs]
    widths = [max(len(row[column]) for row in (_CHAIN_HEADER, *rows)) for column in range(len(_CHAIN_HEADER))]

    def layout(row: Sequence[str], colour_of: dict[int, str]) -> str:
        cells = []
        for column, cell in enumerate(row):
            padded = cell.ljust(widths[column]) if column < len(row) - 1 else cell
            cells.append(style(padded, colour_of[column]) if column in colour_of else padded)
        return "  ".join(cells).rstrip()

    lines = [_line("chain", layout(_CHAIN_HEADER, {}), style)]
    indent = " " * (2 + _LABEL_WIDTH)
    for row, (_, cert) in zip(rows, certs, strict=True):
        colour = _expiry_colour(cert, report)
        lines.append(indent + layout(row, {_NOT_AFTER_COLUMN: colour} if colour else {}))
    return lines


def _chain_row(position_label: str, cert: CertFacts, now: float) -> tuple[str, ...]:
    if cert.parse_error:
        return (position_label, "(unparseable)", "", escape_controls(cert.parse_error), "", "")
    return (
        position_label,
        _clip(subject_name(cert)),
        _clip(display_name(cert.issuer)),
        f"{utc_date(cert.not_after)} ({relative_days(days_left(cert, now))})",
        cert.key,
        cert.signature_algorithm,
    )


def _expiry_colour(cert: CertFacts, report: Assessment) -> str:
    """Red once expired, yellow within the warning threshold, else none ("")."""
    if cert.parse_error:
        return ""
    left = days_left(cert, report.now)
    if left < 0:
        return "red"
    return "yellow" if left <= report.warn_days else ""


def _trust_lines(report: Assessment, style: _Style) -> list[str]:
    tls = report.result.tls
    if tls is None or not tls.chain:
        return []
    verdict = tls.verdict
    store = trust_store_name(report.broker)
    if verdict.trusted:
        anchor = f", anchored at {display_name(verdict.anchor.subject)}" if verdict.anchor else ""
        completed = ""
        if verdict.completed_with:
            names = ", ".join(display_name(cert.subject) for cert in verdict.completed_with)
            completed = f", completed with {names}"
        return [_line("trust", f"{style('trusted', 'green')} by {store}{anchor}{completed}", style)]
    problems = ", ".join(problem.value for problem in verdict.problems) or "untrusted"
    text = f"{style('NOT trusted', 'red', 'bold')} by {store}: {problems}"
    if verdict.verify_message:
        text += f" (OpenSSL: {verdict.verify_message})"
    return [_line("trust", text, style)]


def _legacy_summary(legacy: LegacyTlsFacts, style: _Style) -> str:
    checked = f" (checked {utc_date_time(legacy.checked_at)})" if legacy.checked_at else ""
    if legacy.accepted:
        version = legacy.version or "TLS 1.0/1.1"
        return style(f"still accepts {version}", "yellow") + f", deprecated by RFC 8996{checked}"
    if legacy.accepted is False:
        return f"TLS 1.0/1.1 refused{checked}"
    detail = f": {legacy.detail}" if legacy.detail else ""
    return f"note: could not tell whether TLS 1.0/1.1 is accepted{detail}{checked}"


def _served_file_lines(report: Assessment, style: _Style) -> list[str]:
    """``tls.served_cert_file`` against the served leaf; a file that cannot be read is only a note."""
    served = report.result.served_file
    if served is None:
        return []
    leaf = served.leaf
    if leaf is None:
        why = served.error or f"{served.path}: no certificate in it"
        return [_line("file", f"note: {why}; not compared with the served certificate", style)]
    facts = (
        f"issued {utc_date(leaf.not_before)}, expires {utc_date(leaf.not_after)} "
        f"({relative_days(days_left(leaf, report.now))})"
        if not leaf.parse_error
        else f"unparseable ({leaf.parse_error})"
    )
    name = file_name(served)
    if served.matches is True:
        text = f"{name}: {style('served', 'green')}; {facts}"
    elif served.matches is False:
        text = f"{name}: {style('NOT the certificate served', 'yellow', 'bold')}; the file's: {facts}"
    else:
        text = f"{name}: not compared (no certificate was received); {facts}"
    if served.error:
        text += f"; note: {served.error}"
    return [_line("file", text, style)]


def _client_cert_lines(report: Assessment, style: _Style) -> list[str]:
    """The exporter's own client certificate (mTLS)."""
    cert = report.result.client_cert
    if cert is None:
        return []
    if cert.parse_error:
        return [_line("client", f"our client certificate: unparseable ({cert.parse_error})", style)]
    left = days_left(cert, report.now)
    when = f"{utc_date(cert.not_after)} ({relative_days(left)})"
    colour = _expiry_colour(cert, report)
    if colour:
        when = style(when, colour)
    where = f" ({report.broker.tls.cert_file})" if report.broker.tls.cert_file else ""
    verb = "expired" if left < 0 else "expires"
    return [_line("client", f"our client certificate {subject_name(cert)}{where} {verb} {when}", style)]


def _revocation_lines(report: Assessment, style: _Style) -> list[str]:
    """CRL status per certificate; ``unknown`` is only a note."""
    revocation = report.result.revocation
    if revocation is None:
        return []
    if not revocation.checks:
        return [_line("CRL", "not checked (no CRL distribution point in the chain)", style)]
    lines = []
    indent = " " * (2 + _LABEL_WIDTH)
    for index, check in enumerate(revocation.checks):
        who = chain_label(report.result, check.position)
        if check.status is RevocationStatus.REVOKED:
            text = f"{who}: {style('REVOKED', 'red', 'bold')}"
        elif check.status is RevocationStatus.GOOD:
            text = f"{who}: {style('not revoked', 'green')}"
        else:
            text = f"{who}: unknown (note: revocation could not be checked)"
        if check.detail:
            text += f" - {check.detail}"
        lines.append(_line("CRL", text, style) if index == 0 else indent + text)
    return lines


def _lint_lines(report: Assessment, style: _Style) -> list[str]:
    """Lints: worded as warnings, never counted in the status or the exit code."""
    lints = report.result.lints
    if not lints:
        return []
    indent = " " * (2 + _LABEL_WIDTH)
    lines = [_line("lints", "warnings that do not change the status or the exit code:", style)]
    for finding in lints:
        detail = tailor(finding.detail, report.broker.broker_kind)
        lines.append(f"{indent}- {style(finding.lint.value, 'yellow')}: {detail}")
    return lines


def _mqtt_summary(report: Assessment) -> str:
    mqtt = report.result.mqtt
    if mqtt is None or mqtt.connack_code is None:
        return "no CONNACK"
    text = f"MQTT {mqtt.protocol}, CONNACK {mqtt.connack_code} ({connack_meaning(mqtt.protocol, mqtt.connack_code)})"
    if mqtt.unverified_connection:
        text += " over a connection that ignored the certificate"
        if mqtt.accepted:
            text += ": the broker is up, only the certificate needs fixing"
    return text


def summary_line(reports: Sequence[Assessment], *, colour: bool = False) -> str:
    """One line over several brokers: "3 brokers: 1 OK, 1 WARNING, 1 CRITICAL"."""
    style = _Style(colour)
    counts = {status: sum(1 for report in reports if report.status is status) for status in Status}
    parts = [f"{count} {style.status(status)}" for status, count in counts.items() if count]
    noun = "broker" if len(reports) == 1 else "brokers"
    return style.finish(f"{len(reports)} {noun}: {', '.join(parts)}")
