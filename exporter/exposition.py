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
    results: tuple[ProbeResult, ...]
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
    return _Rendered(tuple(results), static, relative)


class BrokerExposition:
    """Renders the store's broker metrics, reusing each broker's text until its result changes."""

    def __init__(self, store: ResultStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._cache: dict[str, _Rendered] = {}
        self._templates = broker_families([], {}, {}, now=0.0)
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

    def _fresh(self, name: str, results: tuple[ProbeResult, ...]) -> _Rendered:
        cached = self._cache.get(name)
        if (
            cached is None
            or len(cached.results) != len(results)
            or any(a is not b for a, b in zip(cached.results, results, strict=True))
        ):
            cached = _render(results)
            self._cache[name] = cached
        return cached

    def prepare(self, name: str) -> None:
        """Format a broker's text now (called when its result is published), so a scrape only joins."""
        results = self._unit(name)
        if results:
            self._fresh(name, results)

    def render(self) -> str:
        now = self._clock()
        units = self._units()
        cache = {name: self._fresh(name, results) for name, results in units.items()}
        self._cache = cache  # brokers that are gone are dropped here
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
                for rendered in cache.values():
                    for series, timestamp in rendered.relative.get(name, ()):
                        parts.append(f"{series} {_number(timestamp - now)}\n")
            else:
                parts.extend(rendered.static.get(name, "") for rendered in cache.values())
        return "".join(parts)
