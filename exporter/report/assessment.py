"""The assessment of one probe: status, exit code and every finding with its cause and fix. Pure.

``assess(result, broker, warn_days=..., now=...)`` is the whole of it; ``exporter.report.text`` and
``exporter.report.json`` render its value, and anything else that shows a verdict (a status page) reuses it.

Status and exit code, as monitoring plugins (Nagios/Icinga) use them:

* 0 ``ok``: trusted chain, CONNACK accepted, nothing below applies;
* 1 ``warning``: as ok, but
  - a certificate of the chain expires within ``warn_days``;
  - the broker serves an outdated certificate: ``tls.served_cert_file`` holds another certificate than
    the one served (renewed on disk, broker not reloaded). Only a warning: the served one still works
    until it expires, and when it has expired or is otherwise untrusted the trust failure already
    makes the check critical (the fix then says to reload the broker rather than to renew);
  - the trust anchor that verified the chain expires within ``warn_days``;
  - the exporter's own client certificate (``tls.cert_file``) expires within ``warn_days`` or has
    expired: the monitor would go blind once the broker rejects it;
* 2 ``critical``: any failure (unreachable, not TLS, untrusted, expired, CONNACK refused...), or a
  certificate of the chain revoked by its CA (CRL). A revoked certificate is critical here although the
  probe itself succeeds (``success`` stays true: revocation is a different question from reachability);
* 3 ``unknown``: the check could not be run (bad arguments or configuration; decided by the caller).

Shown as notes, never changing the status: a certificate file that cannot be read, a revocation status
that could not be established (``unknown``: no CRL, stale CRL...), whether TLS 1.0/1.1 is accepted.
Lints (issue 7: "never failing the probe") are listed in their own ``lints`` section, worded as
warnings, but never change the status or the exit code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import IntEnum

from mqtt_cert_exporter.config import (
    DEFAULT_EXPIRY_CRITICAL,
    DEFAULT_EXPIRY_WARNING,
    BrokerConfig,
    ExpiryThreshold,
)
from mqtt_cert_exporter.report.brokerfixes import tailor
from mqtt_cert_exporter.report.fixes import (
    ANCHOR_FIX,
    CLIENT_CERT_FIX,
    RELOAD_FIX,
    RENEW_FIX,
    REVOKED_FIX,
    WRONG_FILE_FIX,
    Finding,
    failure_finding,
    problem_fix,
    reload_fix,
)
from mqtt_cert_exporter.report.wording import (
    cert_label,
    chain_label,
    display_name,
    file_name,
    relative_days,
    subject_name,
    trust_store_name,
    utc_date,
    utc_date_time,
)
from mqtt_cert_exporter.results import (
    CertFacts,
    ProbeResult,
    Problem,
    RevocationCheck,
    RevocationStatus,
    ServedFileFacts,
    Stage,
    leaf_lifetime,
)

SECONDS_PER_DAY = 86400.0


def _fixed_days(threshold: ExpiryThreshold) -> float:
    assert threshold.seconds is not None, "the built-in expiry thresholds are durations"
    return threshold.seconds / SECONDS_PER_DAY


#: The warning threshold when neither --warn-days nor the broker's expiry_warning gives one (the
#: broker's threshold is a share of a lifetime not known yet): expiry_warning's own default.
DEFAULT_WARN_DAYS = _fixed_days(DEFAULT_EXPIRY_WARNING)


def warning_days(result: ProbeResult, broker: BrokerConfig) -> float:
    """The broker's ``expiry_warning`` in days, for this result's leaf (the alerts' own threshold)."""
    return _threshold_days(result, broker.expiry_warning, DEFAULT_EXPIRY_WARNING)


def critical_days(result: ProbeResult, broker: BrokerConfig) -> float:
    """The broker's ``expiry_critical`` in days, for this result's leaf (where the alerts page)."""
    return _threshold_days(result, broker.expiry_critical, DEFAULT_EXPIRY_CRITICAL)


def _threshold_days(result: ProbeResult, threshold: ExpiryThreshold, default: ExpiryThreshold) -> float:
    """The threshold for this result's leaf; the built-in one when it is a share of an unknown lifetime."""
    seconds = threshold.for_lifetime(leaf_lifetime(result.tls.chain if result.tls else ()))
    return _fixed_days(default) if seconds is None else seconds / SECONDS_PER_DAY


class Status(IntEnum):
    """The value is the exit code."""

    OK = 0
    WARNING = 1
    CRITICAL = 2
    UNKNOWN = 3

    @property
    def label(self) -> str:
        return self.name.lower()


def worst(statuses: Iterable[Status]) -> Status:
    return max(statuses, default=Status.OK)


@dataclass(frozen=True, slots=True)
class Expiring:
    position: int
    cert: CertFacts
    days_left: float


def days_left(cert: CertFacts, now: float) -> float:
    return (cert.not_after - now) / SECONDS_PER_DAY


def expiring_soon(chain: Sequence[CertFacts], now: float, warn_days: float) -> tuple[Expiring, ...]:
    """Certificates still valid that expire within ``warn_days`` (expired ones are a trust problem)."""
    found = []
    for position, cert in enumerate(chain):
        if cert.parse_error:
            continue
        left = days_left(cert, now)
        if 0 <= left <= warn_days:
            found.append(Expiring(position, cert, left))
    return tuple(found)


def renewed_on_disk(result: ProbeResult, now: float) -> ServedFileFacts | None:
    """The served-file facts when the file holds a renewed, still valid certificate the broker does not
    serve yet (reloading the broker is then the whole fix)."""
    served = result.served_file
    if served is None or served.matches is not False or served.leaf is None or served.leaf.parse_error:
        return None
    if served.leaf.not_after <= now or _file_is_older(result, served):
        return None
    return served


def _file_is_older(result: ProbeResult, served: ServedFileFacts) -> bool:
    """The file's certificate was issued before the served one: not a renewal, probably the wrong file."""
    chain = result.tls.chain if result.tls else ()
    if not chain or chain[0].parse_error or served.leaf is None or served.leaf.parse_error:
        return False
    return served.leaf.not_before < chain[0].not_before


def served_file_finding(result: ProbeResult) -> Finding | None:
    """``served_cert_mismatch``: the broker serves another certificate than its certificate file."""
    served = result.served_file
    if served is None or served.matches is not False or served.leaf is None:
        return None
    chain = result.tls.chain if result.tls else ()
    old = chain[0] if chain and not chain[0].parse_error else None
    new = served.leaf
    if _file_is_older(result, served) and old is not None:
        cause = (
            f"the broker serves another certificate than the file {file_name(served)}: the file's was issued "
            f"on {utc_date(new.not_before)} (expires {utc_date(new.not_after)}), before the one served (issued "
            f"{utc_date(old.not_before)}, expires {utc_date(old.not_after)})"
        )
        return Finding("served_cert_mismatch", cause, WRONG_FILE_FIX)
    old_expiry = f" (expires {utc_date(old.not_after)})" if old is not None else ""
    cause = (
        f"the broker serves an outdated certificate: the file {file_name(served)} was renewed on "
        f"{utc_date(new.not_before)} (expires {utc_date(new.not_after)}) but the broker still serves the old "
        f"one{old_expiry}"
    )
    return Finding("served_cert_mismatch", cause, RELOAD_FIX)


def anchor_finding(
    result: ProbeResult, broker: BrokerConfig, *, warn_days: float, now: float
) -> Finding | None:
    """``anchor_expires_soon``: the trust anchor that verified the chain expires within ``warn_days``."""
    anchor = result.tls.verdict.anchor if result.tls else None
    if anchor is None or anchor.parse_error:
        return None
    left = days_left(anchor, now)
    if left > warn_days:
        return None
    verb = "expires on" if left >= 0 else "expired on"
    cause = (
        f"the trust anchor {display_name(anchor.subject)} (from {trust_store_name(broker)}) that verifies this chain "
        f"{verb} {utc_date_time(anchor.not_after)}, {relative_days(left)} (warning threshold: {warn_days:g} "
        "days): every client that trusts the chain through it will then refuse it"
    )
    return Finding("anchor_expires_soon", cause, ANCHOR_FIX)


def client_cert_finding(
    result: ProbeResult, broker: BrokerConfig, *, warn_days: float, now: float
) -> Finding | None:
    """``client_cert_expires_soon``: the exporter's own client certificate lapses within ``warn_days``."""
    cert = result.client_cert
    if cert is None or cert.parse_error:
        return None
    left = days_left(cert, now)
    if left > warn_days:
        return None
    verb = "expires on" if left >= 0 else "expired on"
    where = f" ({broker.tls.cert_file})" if broker.tls.cert_file else ""
    cause = (
        f"the exporter's own client certificate {subject_name(cert)}{where} {verb} "
        f"{utc_date_time(cert.not_after)}, {relative_days(left)} (warning threshold: {warn_days:g} days): "
        "brokers that require a client certificate then reject the exporter, and the monitor goes blind"
    )
    return Finding("client_cert_expires_soon", cause, CLIENT_CERT_FIX)


def revoked_findings(result: ProbeResult) -> tuple[tuple[RevocationCheck, Finding], ...]:
    """One ``revoked`` finding per certificate of the chain its CA revoked."""
    if result.revocation is None:
        return ()
    found = []
    for check in result.revocation.checks:
        if check.status is not RevocationStatus.REVOKED:
            continue
        cause = f"{chain_label(result, check.position)} was revoked"
        if check.revoked_at is not None:
            cause += f" on {utc_date_time(check.revoked_at)}"
        if check.reason:
            cause += f" ({check.reason})"
        if check.url:
            cause += f" according to the CRL at {check.url}"
        found.append((check, Finding("revoked", cause, REVOKED_FIX)))
    return tuple(found)


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one probe means for its broker: status, and every finding with its cause and fix."""

    result: ProbeResult
    broker: BrokerConfig
    warn_days: float
    now: float
    #: the failure, unless it is "untrusted" (then ``problems`` say why)
    failure: Finding | None
    problems: tuple[tuple[Problem, Finding], ...]
    #: what failed on the extra connection made when the chain is untrusted
    unverified_failure: Finding | None
    #: certificates of the chain that expire within ``warn_days``
    warnings: tuple[tuple[Expiring, Finding], ...]
    #: certificates of the chain revoked by their CA (critical, although the probe succeeds)
    revoked: tuple[tuple[RevocationCheck, Finding], ...] = ()
    #: warnings about certificates around the chain, each with its one-line headline: the served
    #: certificate file, the trust anchor, the exporter's own client certificate
    lifecycle_warnings: tuple[tuple[str, Finding], ...] = ()
    #: a certificate of the chain expiring within this many days is critical, not a warning: the
    #: broker's ``expiry_critical``, where the alert rules page
    critical_days: float = 0.0

    @property
    def status(self) -> Status:
        """Lints and notes never count here (see the module docstring)."""
        expires_critically = any(item.days_left <= self.critical_days for item, _ in self.warnings)
        if self.result.failure is not None or self.revoked or expires_critically:
            return Status.CRITICAL
        if self.warnings or self.lifecycle_warnings:
            return Status.WARNING
        return Status.OK

    @property
    def exit_code(self) -> int:
        return int(self.status)

    @property
    def headline(self) -> str:
        """The verdict in one line: the most important thing wrong, or that nothing is."""
        return _headline(self)


def _expiry_headline(subject: str, cert: CertFacts, warn_days: float, now: float) -> str:
    left = days_left(cert, now)
    if left < 0:
        return f"{subject} expired {relative_days(left)}"
    return f"{subject} expires {relative_days(left)}, within the {warn_days:g}-day warning threshold"


def assess(
    result: ProbeResult, broker: BrokerConfig, *, warn_days: float | None = None, now: float
) -> Assessment:
    """The verdict on one probe of ``broker``: ``warn_days`` is the warning threshold (None: the
    broker's ``expiry_warning``, as the alert rules use it), ``now`` the time the days left are counted
    from."""
    if warn_days is None:
        warn_days = warning_days(result, broker)
    renewed = renewed_on_disk(result, now)
    problems = _problem_findings(result, broker, renewed)
    failure = None
    if result.failure is not None and not (result.failure.stage is Stage.TRUST and problems):
        failure = failure_finding(result.failure, result, broker)
    unverified = None
    if result.secondary_failure is not None:
        unverified = failure_finding(result.secondary_failure, result, broker)
    return _tailored(
        Assessment(
            result=result,
            broker=broker,
            warn_days=warn_days,
            now=now,
            failure=failure,
            problems=problems,
            unverified_failure=unverified,
            warnings=_expiry_warnings(result, renewed, warn_days=warn_days, now=now),
            revoked=revoked_findings(result),
            lifecycle_warnings=_lifecycle_warnings(result, broker, warn_days=warn_days, now=now),
            critical_days=critical_days(result, broker),
        )
    )


def _tailored(report: Assessment) -> Assessment:
    """Every fix as it applies to the broker's kind (``broker_kind``; see exporter.report.brokerfixes)."""
    kind = report.broker.broker_kind

    def fix(finding: Finding) -> Finding:
        return replace(finding, fix=tailor(finding.fix, kind))

    return replace(
        report,
        failure=fix(report.failure) if report.failure else None,
        problems=tuple((problem, fix(finding)) for problem, finding in report.problems),
        unverified_failure=fix(report.unverified_failure) if report.unverified_failure else None,
        warnings=tuple((item, fix(finding)) for item, finding in report.warnings),
        revoked=tuple((check, fix(finding)) for check, finding in report.revoked),
        lifecycle_warnings=tuple((headline, fix(finding)) for headline, finding in report.lifecycle_warnings),
    )


def _problem_findings(
    result: ProbeResult, broker: BrokerConfig, renewed: ServedFileFacts | None
) -> tuple[tuple[Problem, Finding], ...]:
    if result.tls is None:
        return ()
    verdict = result.tls.verdict
    problems = []
    for index, problem in enumerate(verdict.problems):
        detail = verdict.details[index] if index < len(verdict.details) else ""
        fix = problem_fix(problem, result, broker)
        if problem is Problem.EXPIRED and renewed is not None:
            fix = reload_fix(renewed)
        problems.append((problem, Finding(problem.value, detail or problem.value, fix)))
    return tuple(problems)


def _expiry_warnings(
    result: ProbeResult, renewed: ServedFileFacts | None, *, warn_days: float, now: float
) -> tuple[tuple[Expiring, Finding], ...]:
    warnings = []
    for item in expiring_soon(result.tls.chain if result.tls else (), now, warn_days):
        cause = (
            f"{cert_label(item.position, item.cert)} expires on {utc_date_time(item.cert.not_after)}, "
            f"in {item.days_left:.1f} days (warning threshold: {warn_days:g} days)"
        )
        fix = (
            reload_fix(renewed) if item.position == 0 and renewed is not None else "before then, " + RENEW_FIX
        )
        warnings.append((item, Finding("expires_soon", cause, fix)))
    return tuple(warnings)


def _lifecycle_warnings(
    result: ProbeResult, broker: BrokerConfig, *, warn_days: float, now: float
) -> tuple[tuple[str, Finding], ...]:
    lifecycle: list[tuple[str, Finding]] = []
    served = served_file_finding(result)
    if served is not None:
        headline = (
            "the broker serves an outdated certificate: the file was renewed, reload the broker"
            if served.fix == RELOAD_FIX
            else "the broker serves another certificate than its certificate file (tls.served_cert_file)"
        )
        lifecycle.append((headline, served))
    anchor = result.tls.verdict.anchor if result.tls else None
    anchor_warning = anchor_finding(result, broker, warn_days=warn_days, now=now)
    if anchor_warning is not None and anchor is not None:
        subject = f"the trust anchor {display_name(anchor.subject)}"
        lifecycle.append((_expiry_headline(subject, anchor, warn_days, now), anchor_warning))
    client = client_cert_finding(result, broker, warn_days=warn_days, now=now)
    if client is not None and result.client_cert is not None:
        subject = "the exporter's own client certificate"
        lifecycle.append((_expiry_headline(subject, result.client_cert, warn_days, now), client))
    return tuple(lifecycle)


def _headline(report: Assessment) -> str:
    result = report.result
    failure = result.failure
    if failure is not None:
        if failure.stage is Stage.TRUST and result.tls is not None:
            problems = ", ".join(problem.value for problem in result.tls.verdict.problems)
            return f"the certificate chain is not trusted ({problems})"
        return f"{failure.stage.value} failed ({failure.reason.value})"
    if report.revoked:
        check = report.revoked[0][0]
        return f"{chain_label(result, check.position)} was revoked by its CA"
    for headline, finding in report.lifecycle_warnings:
        if finding.kind == "served_cert_mismatch":
            return headline
    if report.warnings:
        first = min(report.warnings, key=lambda item: item[0].days_left)[0]
        return (
            f"{cert_label(first.position, first.cert)} expires {relative_days(first.days_left)}, "
            f"within the {report.warn_days:g}-day warning threshold"
        )
    if report.lifecycle_warnings:
        return report.lifecycle_warnings[0][0]
    text = "trusted chain, MQTT connection accepted"
    chain = [cert for cert in (result.tls.chain if result.tls else ()) if not cert.parse_error]
    if chain:
        position, soonest = min(enumerate(chain), key=lambda item: item[1].not_after)
        left = days_left(soonest, report.now)
        text += f"; earliest expiry: {cert_label(position, soonest)}, {relative_days(left)}"
    return text
