"""Escaping HTML builders and the page shell of the status pages. Pure: strings in, strings out.

Every value that reaches a page is escaped, because certificate subjects, broker names and addresses
can hold anything (``<script>``, quotes, newlines). ``Html`` marks text that is already markup: a plain
``str`` given to a builder is always escaped, at run time as well as in the types, so forgetting to
escape cannot happen by accident; only the builders here make ``Html``.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mqtt_cert_exporter import __version__

#: The project's documentation, linked from every page (a link, not a resource: pages load nothing).
DOCS_URL = "https://github.com/mqtt-cert-exporter/mqtt-cert-exporter#readme"

#: Sent with every page: no script may run, nothing may be loaded from elsewhere, forms only post here.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Html(str):
    """Markup that is safe to emit as it is (made only by the builders of this module)."""

    __slots__ = ()


Child = Html | str | int | float | None
AttributeValue = str | int | float | bool | None


def escape(value: object) -> Html:
    return Html(html.escape(str(value), quote=True))


def join(parts: Iterable[Child], separator: str = "") -> Html:
    """Concatenate; plain strings and numbers among ``parts`` are escaped, None is dropped."""
    sep = escape(separator)
    return Html(sep.join(_child(part) for part in parts if part is not None))


def _child(part: Child) -> Html:
    return part if isinstance(part, Html) else escape(part)


def _attributes(attributes: Mapping[str, AttributeValue]) -> str:
    text = []
    for name, value in attributes.items():
        if value is None or value is False:
            continue
        key = name.rstrip("_").replace("_", "-")  # class_ -> class, aria_label -> aria-label
        text.append(f" {key}" if value is True else f' {key}="{escape(value)}"')
    return "".join(text)


def el(tag: str, *children: Child, **attributes: AttributeValue) -> Html:
    """``<tag attributes>children</tag>``: attribute values and plain-text children escaped."""
    return Html(f"<{tag}{_attributes(attributes)}>{join(children)}</{tag}>")


def void(tag: str, **attributes: AttributeValue) -> Html:
    """An element without content (``<meta>``, ``<input>``, ``<br>``)."""
    return Html(f"<{tag}{_attributes(attributes)}>")


# --------------------------------------------------------------------------------------------------
# Values as a person reads them


def date_time(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def age(seconds: float) -> str:
    """``12 s ago``, ``4 min ago``, ``3.5 h ago``, ``2.0 days ago``."""
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 36 * 3600:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"


def days_text(days: float) -> str:
    return f"{days:.1f} days" if days >= 0 else f"expired {-days:.1f} days ago"


#: Days shown as a full bar: a certificate with this much time left needs no thought yet.
BAR_DAYS = 90.0


def days_bar(days: float, warn_days: float) -> Html:
    """A bar for the days left (amber within the warning threshold), or a red mark once expired."""
    if days < 0:
        return el("span", "EXPIRED", class_="kind critical", title=days_text(days))
    return el(
        "meter",
        min=0,
        max=f"{BAR_DAYS:g}",
        low=0,
        high=f"{min(warn_days, BAR_DAYS):g}",
        optimum=f"{BAR_DAYS:g}",
        value=f"{min(days, BAR_DAYS):.2f}",
        title=days_text(days),
        aria_label=days_text(days),
    )


# --------------------------------------------------------------------------------------------------
# The page shell


STYLE = """
:root{color-scheme:light dark;--ok:#1a7f37;--warn:#9a6700;--crit:#cf222e;--muted:#6e7781;--line:#d0d7de}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;padding:0 12px 24px}
header{display:flex;flex-wrap:wrap;align-items:baseline;gap:4px 16px;border-bottom:1px solid var(--line);
padding:8px 0;margin-bottom:12px}
header h1{font-size:1.2em;margin:0}header h1 a{color:inherit;text-decoration:none}
nav a{margin-right:10px}
h2{font-size:1.1em;margin:20px 0 6px}
small,.muted{color:var(--muted)}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;vertical-align:top;padding:6px 8px;border-bottom:1px solid var(--line)}
th{font-weight:600;white-space:nowrap}
.badge{display:inline-block;min-width:6.5em;text-align:center;font-weight:700;border-radius:4px;padding:1px 6px;
color:#fff;background:var(--muted)}
.critical .badge,.badge.critical{background:var(--crit)}.warning .badge,.badge.warning{background:var(--warn)}
.ok .badge,.badge.ok{background:var(--ok)}
tr.critical td:first-child{border-left:4px solid var(--crit)}tr.warning td:first-child{border-left:4px solid var(--warn)}
tr.ok td:first-child{border-left:4px solid var(--ok)}
meter{width:7em;height:1em;vertical-align:middle}
.kind{font-family:ui-monospace,monospace;font-size:.92em}
.kind.critical{color:var(--crit)}.kind.warning{color:var(--warn)}
.fix{margin:2px 0 8px}.fix b{font-weight:600}
.name{overflow-wrap:anywhere}
form.filter{display:flex;flex-wrap:wrap;gap:6px;margin:8px 0}
form.filter input[type=search]{flex:1 1 14em;min-width:10em;padding:4px}
.summary span{margin-right:12px}
.pager{margin:12px 0}.pager a,.pager span{margin-right:12px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:0}
dl.facts dt{font-weight:600}dl.facts dd{margin:0;overflow-wrap:anywhere}
pre{white-space:pre-wrap;overflow-wrap:anywhere;font-size:.88em}
code{overflow-wrap:anywhere}
@media (max-width:700px){
 table.fleet thead{display:none}
 table.fleet tr{display:block;border-bottom:1px solid var(--line);padding:6px 0}
 table.fleet td{display:block;border:0;padding:2px 4px}
 table.fleet td[data-label]::before{content:attr(data-label) ": ";color:var(--muted)}
 table.chain td,table.chain th{padding:4px}
 dl.facts{grid-template-columns:1fr}
}
"""


@dataclass(frozen=True, slots=True)
class Links:
    """Where the navigation leads; ``root`` is the relative way up to ``/`` from the page."""

    root: str = ""
    probe: bool = False


def navigation(links: Links) -> Html:
    items = [
        el("a", "status", href=links.root or "./"),
        el("a", "metrics", href=f"{links.root}metrics"),
        el("a", "JSON", href=f"{links.root}api/v1/brokers"),
        el("a", "probe", href=f"{links.root or './'}#probe") if links.probe else None,
        el("a", "health", href=f"{links.root}-/healthy"),
        el("a", "readiness", href=f"{links.root}-/ready"),
        el("a", "docs", href=DOCS_URL),
    ]
    return el("nav", *(item for item in items if item is not None))


def page(title: str, body: Html, links: Links, *, refresh_seconds: int | None = None) -> str:
    """A whole document: meta refresh (no script), inline style, nothing loaded from elsewhere."""
    refresh = void("meta", http_equiv="refresh", content=refresh_seconds) if refresh_seconds else None
    head = el(
        "head",
        void("meta", charset="utf-8"),
        void("meta", name="viewport", content="width=device-width, initial-scale=1"),
        refresh,
        el("title", title),
        el("style", Html(STYLE)),
    )
    header = el(
        "header",
        el("h1", el("a", "mqtt-cert-exporter", href=links.root or "./"), " ", el("small", __version__)),
        navigation(links),
    )
    return "<!doctype html>\n" + el("html", head, el("body", header, el("main", body)), lang="en") + "\n"
