"""``/``: the fleet page (scheduled mode), and how to use ``/probe`` (multi-target mode). Pure HTML."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlencode

from mqtt_cert_exporter.report import DEFAULT_WARN_DAYS
from mqtt_cert_exporter.web.status.fleet import PENDING, STATUS_ORDER, Item, Row, View
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

#: Seconds between automatic reloads of the fleet page (a meta refresh: no script).
REFRESH_SECONDS = 30

STATUS_NAMES: Mapping[str, str] = {
    "critical": "CRITICAL",
    "warning": "WARNING",
    PENDING: "PENDING",
    "ok": "OK",
}
#: The status filter's choices: (value of ?status=, what the reader sees)
STATUS_CHOICES = (
    ("", "all"),
    ("critical,warning", "needs attention"),
    ("critical", "CRITICAL"),
    ("warning", "WARNING"),
    (PENDING, "not probed yet"),
    ("ok", "OK"),
)


@dataclass(frozen=True, slots=True)
class ProbeHelp:
    """What the page says about ``/probe``: whether it is on, its patterns and the module names."""

    enabled: bool
    patterns: tuple[str, ...] = ()
    modules: tuple[str, ...] = ("default",)


def broker_href(name: str, root: str = "") -> str:
    return f"{root}broker/{quote(name, safe='')}"


def badge(status: str) -> Html:
    return el("span", STATUS_NAMES[status], class_=f"badge {status}")


def kinds(items: Sequence[Item]) -> Html:
    seen = dict.fromkeys((item.finding.kind, item.severity) for item in items)
    return join((el("span", kind, class_=f"kind {severity}") for kind, severity in seen), ", ")


def finding_list(items: Sequence[Item]) -> Html:
    """Each finding: its name, its cause and its fix, as `check` words them."""
    return el(
        "ul",
        *(
            el(
                "li",
                el("span", item.finding.kind, class_=f"kind {item.severity}"),
                ": ",
                item.finding.cause,
                el("div", el("b", "fix: "), item.finding.fix, class_="fix"),
            )
            for item in items
        ),
        class_="findings",
    )


def fixes(items: Sequence[Item]) -> Html:
    """The finding list folded away (the row stays short until opened)."""
    noun = "cause and fix" if len(items) == 1 else "causes and fixes"
    return el("details", el("summary", noun), finding_list(items))


def _expiry_cell(row: Row, warn_days: float | None) -> Html:
    if row.days_left is None:
        return el("td", el("span", "no certificate", class_="muted"), data_label="Expiry")
    which = "leaf" if row.expiring_position == 0 else f"certificate {row.expiring_position}"
    return el(
        "td",
        days_bar(row.days_left, row.report.warn_days if row.report else warn_days or DEFAULT_WARN_DAYS),
        " ",
        days_text(row.days_left) if row.days_left >= 0 else f"{-row.days_left:.1f} days ago",
        " ",
        el("small", which),
        data_label="Expiry",
    )


def _problems_cell(row: Row) -> Html:
    if row.result is None:
        return el("td", el("span", "waiting for the first probe", class_="muted"), data_label="Problems")
    if not row.items:
        return el("td", el("span", "none", class_="muted"), data_label="Problems")
    failure = row.failure
    failed = None
    if failure and failure not in row.problems:
        failed = el("small", f" (failed at {failure})")
    return el("td", kinds(row.items), failed, fixes(row.items), data_label="Problems")


def _age_cell(row: Row, now: float) -> Html:
    seconds = row.age(now)
    if row.result is None or seconds is None:
        return el("td", "-", data_label="Last probe")
    stale = el("span", " stale", class_="kind critical") if row.stale(now) else None
    return el(
        "td", el("span", age(seconds), title=date_time(row.result.finished)), stale, data_label="Last probe"
    )


def row_html(row: Row, warn_days: float | None, now: float) -> Html:
    address = row.broker.address
    if row.address_label:
        address += f" ({row.address_label})"
    elif row.result is not None and row.result.ip and row.result.ip not in address:
        address += f" ({row.result.ip})"
    return el(
        "tr",
        el("td", badge(row.status), data_label="Status"),
        el(
            "td",
            el("a", row.name, href=broker_href(row.name), class_="name"),
            void("br"),
            el("small", address, class_="name"),
            data_label="Broker",
        ),
        _expiry_cell(row, warn_days),
        _problems_cell(row),
        _age_cell(row, now),
        class_=row.status,
    )


def _link(params: Mapping[str, str], **changes: str | int) -> str:
    merged = {**params, **{key: str(value) for key, value in changes.items()}}
    return "?" + urlencode({key: value for key, value in merged.items() if value})


def summary(view: View, params: Mapping[str, str], warn_days: float | None, now: float) -> Html:
    noun = "broker" if view.total == 1 else "brokers"
    counts = [
        el(
            "a",
            f"{view.counts[status]} {STATUS_NAMES[status]}",
            href=_link({}, status=status),
            class_=f"badge {status}",
        )
        for status in STATUS_ORDER
        if view.counts.get(status)
    ]
    stamp = time.strftime("%H:%M:%S UTC", time.gmtime(now))
    return el(
        "p",
        el("span", el("b", f"{view.total} {noun}")),
        join(el("span", count) for count in counts),
        el(
            "span",
            "warning threshold: each broker's expiry_warning"
            if warn_days is None
            else f"warning threshold {warn_days:g} days",
            class_="muted",
        ),
        el("span", f"as of {stamp}, refreshed every {REFRESH_SECONDS} s", class_="muted"),
        class_="summary",
    )


def filter_form(params: Mapping[str, str]) -> Html:
    chosen = params.get("status", "")
    options = [el("option", label, value=value, selected=value == chosen) for value, label in STATUS_CHOICES]
    per_page = params.get("per_page")
    return el(
        "form",
        void(
            "input",
            type="search",
            name="q",
            value=params.get("q", ""),
            placeholder="filter: name, address, problem",
            aria_label="filter by text",
        ),
        el("select", *options, name="status", aria_label="filter by status"),
        void("input", type="hidden", name="per_page", value=per_page) if per_page else None,
        el("button", "Filter", type="submit"),
        el("a", "clear", href="./") if params.get("q") or chosen else None,
        method="get",
        action="",
        class_="filter",
    )


def pager(view: View, params: Mapping[str, str]) -> Html:
    size = view.query.limit or max(view.matched, 1)
    number = view.query.offset // size + 1
    pages = max(1, -(-view.matched // size))
    first, last = view.query.offset + 1, view.query.offset + len(view.rows)
    shown = f"{first}-{last} of {view.matched}" if view.rows else f"0 of {view.matched}"
    previous = el("a", "previous", href=_link(params, page=number - 1)) if number > 1 else None
    following = el("a", "next", href=_link(params, page=number + 1)) if number < pages else None
    return el(
        "p", previous, el("span", f"page {number} of {pages}, brokers {shown}"), following, class_="pager"
    )


def fleet_table(view: View, warn_days: float | None, now: float) -> Html:
    head = el(
        "thead",
        el("tr", *(el("th", title) for title in ("Status", "Broker", "Expiry", "Problems", "Last probe"))),
    )
    body = el("tbody", *(row_html(row, warn_days, now) for row in view.rows))
    return el("table", head, body, class_="fleet")


def probe_section(help_: ProbeHelp) -> Html:
    if not help_.enabled:
        return el(
            "section",
            el("h2", "Multi-target mode: /probe"),
            el(
                "p",
                "Off. Start the exporter with ",
                el("code", "--probe.allowed-target REGEX"),
                " (repeatable) to let Prometheus probe targets through ",
                el("code", "/probe"),
                ", one probe per request, like blackbox_exporter.",
            ),
            id="probe",
        )
    examples = [
        el("li", el("code", f"probe?target=mqtt.example.com:8883&module={quote(module, safe='')}"))
        for module in help_.modules
    ]
    scrape = (
        "scrape_configs:\n"
        "  - job_name: mqtt-brokers\n"
        "    metrics_path: /probe\n"
        f"    params: {{module: [{help_.modules[0]}]}}\n"
        "    static_configs:\n"
        "      - targets: [mqtt.example.com:8883]\n"
        "    relabel_configs:\n"
        "      - {source_labels: [__address__], target_label: __param_target}\n"
        "      - {source_labels: [__param_target], target_label: instance}\n"
        "      - {target_label: __address__, replacement: EXPORTER_HOST:PORT}\n"
    )
    return el(
        "section",
        el("h2", "Multi-target mode: /probe"),
        el(
            "p",
            el("code", "GET /probe?target=HOST:PORT&module=NAME"),
            " runs one probe of one target with a module's settings and answers with its metrics; add ",
            el("code", "&debug=true"),
            " for the outcome in words. Example URLs, one per configured module:",
        ),
        el("ul", *examples),
        el("p", "Targets must fully match one of these patterns (--probe.allowed-target):"),
        el("ul", *(el("li", el("code", pattern)) for pattern in help_.patterns)),
        el("p", "Prometheus scrapes it like blackbox_exporter:"),
        el("pre", scrape),
        id="probe",
    )


def fleet_page(
    view: View,
    params: Mapping[str, str],
    *,
    warn_days: float | None,
    now: float,
    probe: ProbeHelp,
) -> str:
    """The status page of the scheduled brokers; with none configured, how to use ``/probe``."""
    links = Links(probe=probe.enabled)
    if view.total == 0:
        intro = el(
            "p",
            "No brokers are configured for scheduled probing in this exporter (",
            el("code", "brokers:"),
            " or ",
            el("code", "discover:"),
            " in the configuration file).",
        )
        return page("mqtt-cert-exporter", join([intro, probe_section(probe)]), links)
    parts = [summary(view, params, warn_days, now), filter_form(params)]
    if view.rows:
        parts += [fleet_table(view, warn_days, now), pager(view, params)]
    else:
        parts.append(el("p", "No broker matches this filter.", class_="muted"))
    if probe.enabled:
        parts.append(probe_section(probe))
    counts = ", ".join(f"{view.counts[s]} {STATUS_NAMES[s]}" for s in STATUS_ORDER if view.counts.get(s))
    return page(f"{counts} - mqtt-cert-exporter", join(parts), links, refresh_seconds=REFRESH_SECONDS)
