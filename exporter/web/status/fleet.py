"""The fleet as the status page shows it: one row per result, assessed exactly as `check` assesses it.

Pure: the configured brokers, their latest results, the time and the warning threshold come in; rows,
a filtered and paged view of them, and the JSON document come out. The verdict, the problems and their
fixes are ``exporter.report``'s (``build_report``): this module only arranges them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.report import Finding, Report, build_report, days_left, iso8601
from mqtt_cert_exporter.results import ProbeResult

SCHEMA_VERSION = 1
#: The row status of a broker without a result yet (just configured, or the exporter just started).
PENDING = "pending"
#: Row statuses, worst first: the order of the page.
STATUS_ORDER = ("critical", "warning", PENDING, "ok")
#: A result older than this many probe intervals is marked stale (the scheduler missed it).
STALE_INTERVALS = 3
DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
#: Longest filter text accepted; longer is refused (it is matched against every row).
MAX_FILTER_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Item:
    """One finding of a report, with how bad it is."""

    severity: str  # "critical" or "warning"
    finding: Finding


def findings(report: Report) -> tuple[Item, ...]:
    """Everything the report says is wrong, in the order `check` lists it: critical first."""
    critical = [finding for _, finding in report.problems]
    if report.failure is not None:
        critical.append(report.failure)
    if report.unverified_failure is not None:
        critical.append(report.unverified_failure)
    critical += [finding for _, finding in report.revoked]
    lifecycle = [finding for _, finding in report.lifecycle_warnings]
    served = [finding for finding in lifecycle if finding.kind == "served_cert_mismatch"]
    others = [finding for finding in lifecycle if finding.kind != "served_cert_mismatch"]
    warnings = [*served, *(finding for _, finding in report.warnings), *others]
    return (
        *(Item("critical", finding) for finding in critical),
        *(Item("warning", finding) for finding in warnings),
    )


@dataclass(frozen=True)
class Row:
    """One result as the page shows it. What only shown rows need is worked out when first asked for."""

    broker: BrokerConfig
    #: None until the broker's first probe finished
    result: ProbeResult | None
    report: Report | None
    status: str
    #: days left of the earliest-expiring certificate of the presented chain (None: no certificate)
    days_left: float | None
    expiring_position: int | None

    @property
    def name(self) -> str:
        return self.broker.name

    @property
    def address_label(self) -> str:
        return self.result.address_label if self.result else ""

    @property
    def failure(self) -> str:
        failure = self.result.failure if self.result else None
        return f"{failure.stage.value}/{failure.reason.value}" if failure else ""

    @cached_property
    def items(self) -> tuple[Item, ...]:
        return findings(self.report) if self.report is not None else ()

    @cached_property
    def problems(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(item.finding.kind for item in self.items))

    @cached_property
    def haystack(self) -> str:
        """What the text filter looks in (lower case)."""
        parts = [
            self.name,
            self.broker.address,
            self.address_label,
            self.status,
            self.failure,
            *self.problems,
        ]
        if self.result is not None:
            parts.append(self.result.ip)
        return " ".join(parts).lower()

    def age(self, now: float) -> float | None:
        """Seconds since the result (None when pending)."""
        return None if self.result is None else now - self.result.finished

    def stale(self, now: float) -> bool:
        """Older than ``STALE_INTERVALS`` probe intervals (and the timeout): the scheduler missed it."""
        age = self.age(now)
        return age is not None and age > STALE_INTERVALS * self.broker.interval + self.broker.timeout

    def sort_key(self) -> tuple[int, float, str, str]:
        days = self.days_left if self.days_left is not None else float("inf")
        return (_RANK[self.status], days, self.name, self.address_label)


_RANK = {status: rank for rank, status in enumerate(STATUS_ORDER)}


def _earliest(result: ProbeResult, now: float) -> tuple[float | None, int | None]:
    chain = result.tls.chain if result.tls else ()
    candidates = [
        (days_left(cert, now), position) for position, cert in enumerate(chain) if not cert.parse_error
    ]
    if not candidates:
        return None, None
    return min(candidates)


def assess(broker: BrokerConfig, result: ProbeResult, *, now: float, warn_days: float | None) -> Row:
    report = build_report(result, broker, warn_days=warn_days, now=now)
    left, position = _earliest(result, now)
    return Row(broker, result, report, report.status.label, left, position)


def pending(broker: BrokerConfig) -> Row:
    return Row(broker, None, None, PENDING, None, None)


class Assessor:
    """Assesses the fleet, reusing the assessment of a result it has seen for ``reuse_seconds``.

    A result is immutable, but its verdict depends on the time (a certificate enters the warning
    threshold, expires): reused assessments are at most ``reuse_seconds`` old, so a page of a large
    fleet costs the assessment of the results that changed since the previous page, not of all of them.
    Holds only the assessments of the latest call's results (bounded by the fleet).
    """

    def __init__(self, *, warn_days: float | None, reuse_seconds: float = 60.0) -> None:
        self.warn_days = warn_days
        self.reuse_seconds = reuse_seconds
        self._seen: dict[int, tuple[ProbeResult, BrokerConfig, float, Row]] = {}

    def rows(
        self, brokers: Iterable[BrokerConfig], results: Iterable[ProbeResult], *, now: float
    ) -> list[Row]:
        """One row per result (one per address for ``addresses: all``), a pending row per broker
        without one. Results of brokers no longer configured (a reload raced the request) are left out."""
        by_name: dict[str, list[ProbeResult]] = {}
        for result in results:
            by_name.setdefault(result.broker, []).append(result)
        seen, kept = self._seen, {}
        rows = []
        for broker in brokers:
            found = by_name.get(broker.name)
            if not found:
                rows.append(pending(broker))
                continue
            for result in found:
                entry = seen.get(id(result))
                if (
                    entry
                    and entry[0] is result
                    and entry[1] is broker
                    and 0 <= now - entry[2] < self.reuse_seconds
                ):
                    kept[id(result)] = entry
                    rows.append(entry[3])
                    continue
                row = assess(broker, result, now=now, warn_days=self.warn_days)
                kept[id(result)] = (result, broker, now, row)
                rows.append(row)
        self._seen = kept
        return rows


def assess_fleet(
    brokers: Iterable[BrokerConfig], results: Iterable[ProbeResult], *, now: float, warn_days: float | None
) -> list[Row]:
    """Every row, assessed now (nothing reused)."""
    return Assessor(warn_days=warn_days).rows(brokers, results, now=now)


# --------------------------------------------------------------------------------------------------
# What the reader asked for: ?q=TEXT&status=critical,warning&page=N (HTML), &offset=&limit= (JSON)


class QueryError(ValueError):
    """A query parameter that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class Query:
    text: str = ""
    #: row statuses to show; empty: all
    statuses: tuple[str, ...] = ()
    offset: int = 0
    #: None: all matching rows
    limit: int | None = DEFAULT_PAGE_SIZE


def _whole_number(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    text = params.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise QueryError(f"parameter {name!r}: expected a whole number from {low} to {high}")
    return int(text)


def parse_query(params: Mapping[str, str], *, paged: bool) -> Query:
    """``paged``: the HTML page (``page``, ``per_page``); otherwise the API (``offset``, ``limit``, all
    rows when ``limit`` is absent)."""
    text = params.get("q", "").strip()
    if len(text) > MAX_FILTER_LENGTH:
        raise QueryError(f"parameter 'q': longer than {MAX_FILTER_LENGTH} characters")
    statuses = tuple(dict.fromkeys(part.strip().lower() for part in params.get("status", "").split(",")))
    statuses = tuple(status for status in statuses if status and status != "all")
    unknown = [status for status in statuses if status not in STATUS_ORDER]
    if unknown:
        raise QueryError(f"parameter 'status': expected some of {', '.join(STATUS_ORDER)} (comma-separated)")
    if paged:
        size = _whole_number(params, "per_page", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)
        number = _whole_number(params, "page", 1, 1, 10**9)
        return Query(text, statuses, (number - 1) * size, size)
    offset = _whole_number(params, "offset", 0, 0, 10**9)
    limit = _whole_number(params, "limit", 0, 1, 10**9) if params.get("limit", "").strip() else None
    return Query(text, statuses, offset, limit)


@dataclass(frozen=True, slots=True)
class View:
    """The rows one request shows, and what the whole fleet looks like."""

    query: Query
    #: rows per status over the whole fleet, unfiltered
    counts: Mapping[str, int]
    #: rows the filter matched
    matched: int
    rows: tuple[Row, ...]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def select(rows: Sequence[Row], query: Query) -> View:
    """Filter, sort worst first (then fewest days left), and cut the page."""
    counts = {status: 0 for status in STATUS_ORDER}
    for row in rows:
        counts[row.status] += 1
    needle = query.text.lower()
    chosen = [
        row
        for row in rows
        if (not query.statuses or row.status in query.statuses) and (not needle or needle in row.haystack)
    ]
    chosen.sort(key=Row.sort_key)
    end = None if query.limit is None else query.offset + query.limit
    return View(query, counts, len(chosen), tuple(chosen[query.offset : end]))


# --------------------------------------------------------------------------------------------------
# The JSON twin (schema: docs/status.md)


def _optional_time(timestamp: float | None) -> str | None:
    return iso8601(timestamp) if timestamp is not None else None


def row_document(row: Row, *, now: float) -> dict[str, Any]:
    result = row.result
    failure = result.failure if result else None
    age = row.age(now)
    expires = None
    if result is not None and result.tls is not None and row.expiring_position is not None:
        expires = iso8601(result.tls.chain[row.expiring_position].not_after)
    return {
        "broker": row.name,
        "address": row.broker.address,
        "address_label": row.address_label,
        "ip": result.ip if result else "",
        "status": row.status,
        "days_left": round(row.days_left, 3) if row.days_left is not None else None,
        "expires": expires,
        "expires_position": row.expiring_position,
        "problems": list(row.problems),
        "findings": [
            {
                "kind": item.finding.kind,
                "severity": item.severity,
                "cause": item.finding.cause,
                "fix": item.finding.fix,
            }
            for item in row.items
        ],
        "failure": (
            {"stage": failure.stage.value, "reason": failure.reason.value, "detail": failure.detail}
            if failure
            else None
        ),
        "checked_at": _optional_time(result.finished if result else None),
        "age_seconds": round(age, 3) if age is not None else None,
        "stale": row.stale(now),
    }


def fleet_document(view: View, *, now: float, warn_days: float | None) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": iso8601(now),
        "warn_days": warn_days,
        "counts": dict(view.counts),
        "total": view.total,
        "matched": view.matched,
        "offset": view.query.offset,
        "limit": view.query.limit,
        "brokers": [row_document(row, now=now) for row in view.rows],
    }
