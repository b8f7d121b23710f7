"""What `check`, `demo` and a status page show for one probe, split by job.

* ``fixes``: the fix catalogue, every failure's and trust problem's cause in plain words and its fix;
* ``assessment``: ``assess(result, broker, warn_days=..., now=...) -> Assessment``, the status, exit code
  and findings of one probe (pure: everything comes in as arguments, nothing is read or printed);
* ``text`` and ``json``: the two renderings of an assessment (docs/check.md);
* ``wording``: how names, dates and days are said, shared by all of them.

``Report`` is an assessment that renders itself, as `check` and `demo` use it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.report.assessment import (
    DEFAULT_WARN_DAYS,
    SECONDS_PER_DAY,
    Assessment,
    Expiring,
    Status,
    anchor_finding,
    assess,
    client_cert_finding,
    days_left,
    expiring_soon,
    renewed_on_disk,
    revoked_findings,
    served_file_finding,
    worst,
)
from mqtt_cert_exporter.report.fixes import (
    ANCHOR_FIX,
    CAFILE_HOWTO,
    CLIENT_CERT_FIX,
    CREDENTIALS_HOWTO,
    FAILURE_FIXES,
    FULL_CHAIN_FIX,
    RELOAD_FIX,
    RENEW_FIX,
    REVOKED_FIX,
    WRONG_FILE_FIX,
    Finding,
    failure_finding,
    problem_fix,
)
from mqtt_cert_exporter.report.json import SCHEMA_VERSION, render_document
from mqtt_cert_exporter.report.text import MAX_NAME_WIDTH, render_text, summary_line
from mqtt_cert_exporter.report.wording import display_name, iso8601, names_covered
from mqtt_cert_exporter.results import ProbeResult

__all__ = [
    "ANCHOR_FIX",
    "CAFILE_HOWTO",
    "CLIENT_CERT_FIX",
    "CREDENTIALS_HOWTO",
    "DEFAULT_WARN_DAYS",
    "FAILURE_FIXES",
    "FULL_CHAIN_FIX",
    "MAX_NAME_WIDTH",
    "RELOAD_FIX",
    "RENEW_FIX",
    "REVOKED_FIX",
    "SCHEMA_VERSION",
    "SECONDS_PER_DAY",
    "WRONG_FILE_FIX",
    "Assessment",
    "Expiring",
    "Finding",
    "Report",
    "Status",
    "anchor_finding",
    "assess",
    "build_report",
    "client_cert_finding",
    "days_left",
    "display_name",
    "expiring_soon",
    "failure_finding",
    "iso8601",
    "names_covered",
    "problem_fix",
    "render_document",
    "render_text",
    "renewed_on_disk",
    "revoked_findings",
    "served_file_finding",
    "summary_line",
    "worst",
]


@dataclass(frozen=True, slots=True)
class Report(Assessment):
    """An assessment with its two renderings."""

    def text(self, *, colour: bool = False) -> str:
        return render_text(self, colour=colour)

    def document(self) -> dict[str, Any]:
        return render_document(self)


def build_report(
    result: ProbeResult, broker: BrokerConfig, *, warn_days: float | None = None, now: float
) -> Report:
    assessment = assess(result, broker, warn_days=warn_days, now=now)
    return Report(**{field.name: getattr(assessment, field.name) for field in fields(assessment)})
