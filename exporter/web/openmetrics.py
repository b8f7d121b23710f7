"""The text format 0.0.4 that /metrics renders, as OpenMetrics 1.0.0 for clients that ask for it. Pure.

The fleet's part of /metrics is cached as 0.0.4 text (exporter.exposition); rendering it again through
prometheus_client's OpenMetrics encoder would cost seconds at 10,000 brokers, and every Prometheus asks
for OpenMetrics first. The two formats differ, for what this exporter emits (gauges and counters), only in
the family name of a counter (``# TYPE x counter`` with samples ``x_total``; 0.0.4 says ``x_total``),
``unknown`` for ``untyped``, a counter's ``_created`` series (0.0.4 lists them as a gauge family of their
own) and the closing ``# EOF``: header lines are rewritten, sample lines pass through untouched.
"""

from __future__ import annotations

import re

CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"

_COUNTER = re.compile(r"^# TYPE (\S+)_total counter$", re.MULTILINE)
_HEADER = re.compile(r"^# (HELP|TYPE) (\S+)(.*)\n", re.MULTILINE)


#: the last line of an OpenMetrics body
EOF = "# EOF\n"


def from_text_format(text: str) -> str:
    """OpenMetrics text for 0.0.4 text (as prometheus_client and exporter.exposition write it)."""
    body = rewrite_headers(text)
    return body + ("" if body.endswith("\n") or not body else "\n") + EOF


def rewrite_headers(text: str) -> str:
    """0.0.4 text with its HELP and TYPE lines as OpenMetrics has them (no ``# EOF``). A family's header
    depends on that family alone (a counter and its ``_created`` series are next to each other), so the
    families of a text can be rewritten each on their own."""
    counters = set(_COUNTER.findall(text))
    created = {f"{name}_created" for name in counters}

    def header(match: re.Match[str]) -> str:
        kind, name, rest = match.groups()
        if name in created:
            return ""  # the samples join their counter's family, just above
        if name.endswith("_total") and name[:-6] in counters:
            return f"# {kind} {name[:-6]}{rest}\n"
        if kind == "TYPE" and rest == " untyped":
            return f"# TYPE {name} unknown\n"
        return match.group(0)

    return _HEADER.sub(header, text)
