"""/metrics text for a whole fleet, fast: each immutable result is rendered once and its text reused.

`collector.broker_families` stays the one definition of which series exist; this module only decides
*when* to format them. A broker's text is formatted when its result changes and reused by every scrape
until then. The few values relative to the scrape time (``*_expires_in_seconds``) are kept as absolute
timestamps and turned into "seconds from now" at each scrape. Rendering 10,000 brokers through
prometheus_client on every scrape took about 3 s here; with this cache a scrape costs a join.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from exporter.collector import broker_families
from exporter.results import ProbeResult
from exporter.store import ResultStore

#: Families whose value is ``timestamp - now``: rendered with now = 0 (the timestamp) and shifted at
#: scrape time. Every other broker family must not depend on ``now``.
RELATIVE_TO_NOW = frozenset(
    {
        "mqtt_broker_cert_expires_in_seconds",
        "mqtt_broker_cert_anchor_expires_in_seconds",
        "mqtt_cert_exporter_client_cert_expires_in_seconds",
    }
)

INTERVAL_FAMILY = "mqtt_broker_probe_interval_seconds"


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _series(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _number(value: float) -> str:
    return cast(str, floatToGoString(value))  # type: ignore[no-untyped-call]


def _lines(families: Iterable[Metric], name: str) -> Iterator[str]:
    for family in families:
        if family.name == name:
            for sample in family.samples:
                yield f"{_series(sample.name, sample.labels)} {_number(sample.value)}\n"


@dataclass(frozen=True, slots=True)
class _Rendered:
    #: family name -> text lines (static families)
    static: dict[str, str]
    #: family name -> (series, absolute timestamp) (families relative to now)
    relative: dict[str, tuple[tuple[str, float], ...]]


def _render(results: Sequence[ProbeResult]) -> _Rendered:
    static: dict[str, str] = {}
    relative: dict[str, tuple[tuple[str, float], ...]] = {}
    for family in broker_families(results, {}, {}, now=0.0):
        if not family.samples:
            continue
        if family.name in RELATIVE_TO_NOW:
            relative[family.name] = tuple((_series(s.name, s.labels), s.value) for s in family.samples)
        else:
            static[family.name] = "".join(_lines([family], family.name))
    return _Rendered(static, relative)


class BrokerExposition:
    """Renders the store's broker metrics, reusing each broker's text until its result changes.

    Text is kept per family as {broker: text}, so a scrape joins each family's values in one C-level
    ``str.join`` instead of visiting every broker in Python.
    """

    def __init__(self, store: ResultStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._templates = broker_families([], {}, {}, now=0.0)
        self._static: dict[str, dict[str, str]] = {
            t.name: {} for t in self._templates if t.name not in RELATIVE_TO_NOW
        }
        self._relative: dict[str, dict[str, tuple[tuple[str, float], ...]]] = {
            t.name: {} for t in self._templates if t.name in RELATIVE_TO_NOW
        }
        #: broker -> the results its text was formatted from
        self._formatted: dict[str, tuple[ProbeResult, ...]] = {}
        self._intervals_of: object = None
        self._interval_lines = ""

    def _units(self) -> dict[str, tuple[ProbeResult, ...]]:
        units: dict[str, tuple[ProbeResult, ...]] = {
            name: (result,) for name, result in self._store.results.items()
        }
        for name, group in self._store.groups.items():
            units[name] = tuple(group)
        return units

    def _unit(self, name: str) -> tuple[ProbeResult, ...]:
        if name in self._store.groups:
            return tuple(self._store.groups[name])
        result = self._store.results.get(name)
        return (result,) if result is not None else ()

    def _refresh(self, name: str, results: tuple[ProbeResult, ...]) -> None:
        formatted = self._formatted.get(name)
        if (
            formatted is not None
            and len(formatted) == len(results)
            and all(a is b for a, b in zip(formatted, results, strict=True))
        ):
            return
        rendered = _render(results)
        for family, texts in self._static.items():
            text = rendered.static.get(family)
            if text:
                texts[name] = text
            else:
                texts.pop(name, None)
        for family, values in self._relative.items():
            found = rendered.relative.get(family)
            if found:
                values[name] = found
            else:
                values.pop(name, None)
        self._formatted[name] = results

    def _forget(self, name: str) -> None:
        self._formatted.pop(name, None)
        for texts in self._static.values():
            texts.pop(name, None)
        for values in self._relative.values():
            values.pop(name, None)

    def prepare(self, name: str) -> None:
        """Format a broker's text now (called when its result is published), so a scrape only joins."""
        results = self._unit(name)
        if results:
            self._refresh(name, results)

    def render(self) -> str:
        now = self._clock()
        units = self._units()
        for name in [name for name in self._formatted if name not in units]:
            self._forget(name)  # removed brokers
        for name, results in units.items():
            self._refresh(name, results)
        # Counters change without a new result: rendered every scrape (one line per failing broker and
        # reason). Intervals change only with the configuration (the store replaces the mapping).
        bookkeeping = {
            family.name: family
            for family in broker_families([], dict(self._store.failure_counts), {}, now=now)
        }
        if self._intervals_of is not self._store.intervals:
            self._intervals_of = self._store.intervals
            self._interval_lines = "".join(
                _lines(broker_families([], {}, self._store.intervals, now=now), INTERVAL_FAMILY)
            )
        parts: list[str] = []
        for template in self._templates:
            name = template.name
            exposed = name + "_total" if template.type == "counter" else name
            doc = template.documentation.replace("\\", r"\\").replace("\n", r"\n")
            parts.append(f"# HELP {exposed} {doc}\n# TYPE {exposed} {template.type}\n")
            parts.extend(_lines([bookkeeping[name]], name))
            if name == INTERVAL_FAMILY:
                parts.append(self._interval_lines)
            if name in RELATIVE_TO_NOW:
                parts.extend(
                    f"{series} {timestamp - now!r}\n"
                    for values in self._relative[name].values()
                    for series, timestamp in values
                )
            else:
                parts.append("".join(self._static[name].values()))
        return "".join(parts)
