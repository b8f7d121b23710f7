"""/metrics text for a whole fleet, fast: each immutable result is rendered once and its text reused.

`collector.broker_samples` stays the one definition of which series exist; this module only decides
*when* to format them, and formats those plain samples itself (escaped and numbered exactly as
prometheus_client does). A broker's text is formatted when its result is published and reused by every scrape until then.
Of a new result, only its ``per_probe_samples`` are formatted as long as its ``lasting_key`` (the chain's
facts, the session, the configuration) equals the previous result's: the lasting text stays in place.
The few values relative to the scrape time (families with a ``now_slope``: ``*_expires_in_seconds``,
the chain's age) are kept as absolute timestamps and shifted by the scrape's time at each scrape.
Rendering 10,000 brokers through prometheus_client on every scrape took about 3 s here; with this
cache a scrape costs a join.
"""

from __future__ import annotations

import io
import operator
import time
from collections.abc import Callable
from typing import Any, Final, NamedTuple

from mqtt_cert_exporter.collector import (
    ChainDetail,
    broker_samples,
    configured_samples,
    lasting_key,
    lasting_samples,
    per_probe_samples,
)
from mqtt_cert_exporter.config import BrokerConfig
from mqtt_cert_exporter.families import BROKER_FAMILIES, PROBE_INTERVAL, Family, Sample
from mqtt_cert_exporter.results import ProbeResult
from mqtt_cert_exporter.store import ResultStore


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def number(value: float) -> str:
    """``prometheus_client.utils.floatToGoString`` (tests hold them equal)."""
    if type(value) is float and -1e6 < value < 1e6:  # durations, ages: Python's repr is Go's
        return repr(value)
    text = _NUMBERS.get(value)
    if text is not None:
        return text
    text = repr(float(value))
    dot = text.find(".")
    if dot > 6 and value > 0:  # Go's exponent notation: 1.75e+09
        digits = text.replace(".", "").rstrip("0")
        text = (digits[0] + "." + digits[1:] if len(digits) > 1 else digits) + _EXPONENTS[dot - 1]
        if value % 1 == 0:  # certificate validity, the same at every probe of a broker
            if len(_NUMBERS) >= _MAX_NUMBERS:
                _NUMBERS.clear()
            _NUMBERS[value] = text
    elif dot < 0 and text[-1] > "9":
        text = _NON_FINITE[text]
    return text


_EXPONENTS: Final = tuple(f"e+{exponent:02d}" for exponent in range(17))
_NON_FINITE: Final = {"inf": "+Inf", "-inf": "-Inf", "nan": "NaN"}
#: formatted whole numbers >= 1e6 (no -0.0 or NaN, which a dict lookup would confuse)
_NUMBERS: dict[float, str] = {}
_MAX_NUMBERS: Final = 1 << 15

#: (family, label names) -> the text around the label values (``name{a="``, ``",b="``, ``"} ``), and
#: whether the family's values are relative to now
_PIECES: dict[tuple[Family, tuple[str, ...]], tuple[tuple[str, ...], bool]] = {}


def _pieces(family: Family, labels: tuple[str, ...]) -> tuple[tuple[str, ...], bool]:
    if labels:
        head = f'{family.sample_name}{{{labels[0]}="'
        pieces = (head, *(f'",{label}="' for label in labels[1:]), '"} ')
    else:
        pieces = (family.sample_name + " ",)
    found = _PIECES[(family, labels)] = (pieces, family.relative_to_now)
    return found


def _escaped(samples: list[Sample]) -> list[Sample]:
    """The samples with label values escaped as prometheus_client does (seldom needed: checked at once)."""
    text = "".join([value for sample in samples for value in sample[2]])
    if '"' not in text and "\\" not in text and "\n" not in text:
        return samples
    return [(family, labels, tuple(map(_escape, values)), value) for family, labels, values, value in samples]


Lines = dict[Family, list[str]]
#: the families a part of a broker's samples has text in
Present = tuple[Family, ...]
#: family -> (``name{labels} ``, value) of a family whose value is shifted at scrape time
Relative = dict[Family, list[tuple[str, float]]]


def _format(samples: list[Sample]) -> tuple[Lines, Relative]:
    """The text lines of the samples, by family; the series alone for families relative to now.

    Runs for every sample of every published result, hence one inlined pass; the samples of a family
    come one after the other (a probe's phases, a chain's certificates), and share its lookups.
    """
    lines: Lines = {}
    relative: Relative = {}
    last: tuple[Family, tuple[str, ...]] | None = None
    for family, labels, values, value in _escaped(samples):
        if last is None or family is not last[0] or labels is not last[1]:
            last = family, labels
            pieces, moving = _PIECES.get(last) or _pieces(family, labels)
            found: list[Any] = (relative if moving else lines).setdefault(family, [])
        count = len(values)
        if count == 1:
            series = pieces[0] + values[0] + pieces[1]
        elif count == 2:
            series = pieces[0] + values[0] + pieces[1] + values[1] + pieces[2]
        elif count == 3:  # a failure's stage and reason
            series = pieces[0] + values[0] + pieces[1] + values[1] + pieces[2] + values[2] + pieces[3]
        else:
            series = "".join([text for pair in zip(pieces, (*values, ""), strict=True) for text in pair])
        if moving:
            found.append((series, value))
        else:
            found.append(series + ("1.0" if value == 1.0 else number(value)) + "\n")
    return lines, relative


def _header(family: Family) -> str:
    name = family.sample_name
    doc = family.documentation.replace("\\", r"\\").replace("\n", r"\n")
    return f"# HELP {name} {doc}\n# TYPE {name} {family.type}\n"


#: Rewrites the text of metric families' HELP and TYPE lines (OpenMetrics: ``web.openmetrics``).
Headers = Callable[[str], str]

_HEADERS: Final = {family: _header(family).encode() for family in BROKER_FAMILIES}
#: each ``headers`` rewrite asked for (the two formats) -> the families' headers
_REWRITTEN: dict[Headers | None, dict[Family, bytes]] = {None: _HEADERS}


def _family_headers(headers: Headers | None) -> dict[Family, bytes]:
    """Every broker family's HELP and TYPE lines, encoded, as ``headers`` rewrites them (None: 0.0.4)."""
    found = _REWRITTEN.get(headers)
    if found is None:
        assert headers is not None  # the 0.0.4 headers are there from the start
        found = _REWRITTEN[headers] = {
            family: headers(_header(family)).encode() for family in BROKER_FAMILIES
        }
    return found


def samples_body(samples: list[Sample], headers: Headers | None = None, tail: str = "") -> bytes:
    """The encoded text of a few brokers' samples as of the time they were made for (``now`` given to
    ``broker_samples``): every broker family in order, its HELP and TYPE lines even without samples, as
    prometheus_client would render them (multi-target ``/probe``: one result per request, where building
    prometheus_client's objects cost more than the probe's own bookkeeping). ``headers`` and ``tail`` as
    for ``BrokerExposition.body``."""
    lines, relative = _format(samples)
    family_headers = _family_headers(headers)
    parts: list[bytes] = []
    for family in BROKER_FAMILIES:
        parts.append(family_headers[family])
        if family in lines:
            parts.append("".join(lines[family]).encode())
        elif family in relative:
            parts.extend([b"%b%a\n" % (series.encode(), value) for series, value in relative[family]])
    parts.append(tail.encode())
    return b"".join(parts)


class BrokerExposition:
    """Renders the store's broker metrics, reusing each broker's text until its result changes.

    Text is kept per family as {broker: text}, so a scrape joins each family's values in one C-level
    ``bytes.join`` instead of visiting every broker in Python. It is kept encoded, as the response sends
    it: a scrape then builds the body once (24 MB at 10,000 brokers), not a text and then its bytes.
    """

    def __init__(
        self,
        store: ResultStore,
        clock: Callable[[], float] = time.time,
        chain: ChainDetail = ChainDetail.ALL,
    ) -> None:
        self._store = store
        self._clock = clock
        self._chain = chain
        self._static: dict[Family, dict[str, bytes]] = {
            family: {} for family in BROKER_FAMILIES if not family.relative_to_now
        }
        self._relative: dict[Family, dict[str, tuple[tuple[bytes, float], ...]]] = {
            family: {} for family in BROKER_FAMILIES if family.relative_to_now
        }
        #: broker -> what its text was formatted from
        self._formatted: dict[str, _Formatted] = {}
        self._intervals_of: object = None
        self._interval_lines = b""
        self._configured_of: object = None
        self._configured: dict[Family, bytes] = {}
        #: the store's revision this text reflects (an empty store is reflected by no text at all);
        #: -1: look at every broker at the next scrape
        self._synced = -1 if store.results else store.revision

    def _refresh(self, name: str, results: tuple[ProbeResult, ...]) -> None:
        formatted = self._formatted.get(name)
        if formatted is not None and _same(formatted.results, results):
            return
        broker = self._store.brokers.get(name)
        if formatted is not None and lasting_key(results, broker, self._chain) == lasting_key(
            formatted.results, formatted.broker, self._chain
        ):
            lasting = formatted.lasting  # its text is in place
        else:
            samples = lasting_samples(results, broker, now=0.0, chain=self._chain)
            lasting = self._place(name, samples, formatted.lasting if formatted is not None else ())
        before = formatted.per_probe if formatted is not None else ()
        per_probe = self._place(name, per_probe_samples(results, now=0.0), before)
        self._formatted[name] = _Formatted(results, broker, lasting, per_probe)

    def _place(self, name: str, samples: list[Sample], before: Present) -> Present:
        """Format a broker's samples into its text of their families; those of ``before`` (the families
        the same part had text in) without samples now lose it. Returns the families with text."""
        lines, relative = _format(samples)
        present = _present((*lines, *relative))
        if before is not present:
            for family in before:
                if family not in lines and family not in relative:
                    (self._relative if family.relative_to_now else self._static)[family].pop(name)
        for family, texts in lines.items():
            self._static[family][name] = "".join(texts).encode()
        for family, series in relative.items():
            self._relative[family][name] = tuple([(text.encode(), at) for text, at in series])
        return present

    def _forget(self, name: str) -> None:
        self._formatted.pop(name, None)
        for texts in self._static.values():
            texts.pop(name, None)
        for values in self._relative.values():
            values.pop(name, None)

    def prepare(self, name: str) -> None:
        """Format a broker's text now (called when its result is published), so a scrape only joins.

        When every change of the store was prepared this way, a scrape does not visit the brokers at all.
        """
        results = self._store.results.get(name)
        if results:
            self._refresh(name, results)
        if self._store.revision == self._synced + 1:
            self._synced = self._store.revision

    def prepare_configuration(self) -> None:
        """Format what the configuration alone says (each broker's interval and configured facts), if it
        changed since: called when a configuration is applied, so the first scrape after it does not
        (a third of that scrape at 10,000 brokers, the event loop blocked)."""
        if self._intervals_of is not self._store.intervals:
            self._intervals_of = self._store.intervals
            intervals, _ = _format(broker_samples([], {}, self._store.intervals, now=0.0))
            self._interval_lines = "".join(intervals.get(PROBE_INTERVAL, ())).encode()
        if self._configured_of is not self._store.brokers:
            self._configured_of = self._store.brokers
            configured, _ = _format(configured_samples(self._store.brokers.values()))
            self._configured = {family: "".join(texts).encode() for family, texts in configured.items()}

    def _sync(self) -> None:
        """Bring every broker's text up to date: removed brokers, results published without prepare."""
        if self._store.revision == self._synced:
            return
        brokers = self._store.results
        for name in [name for name in self._formatted if name not in brokers]:
            self._forget(name)  # removed brokers
        for name, results in brokers.items():
            self._refresh(name, results)
        self._synced = self._store.revision

    def render(self, head: str = "") -> str:
        """``body`` as text (0.0.4)."""
        return self.body(head).decode()

    def body(self, head: str = "", headers: Headers | None = None, tail: str = "") -> bytes:
        """The encoded fleet's metrics after ``head`` (the exporter's own metrics): one join of the
        brokers' texts, formatted when their results were published (24 MB at 10,000 brokers, copied
        once). ``headers`` rewrites each family's HELP and TYPE lines (the text it gives is the same as of
        the whole text rewritten: the lines of one family only ever depend on that family), ``tail`` ends
        the body: OpenMetrics is the 0.0.4 text with its headers rewritten and ``# EOF`` at the end.

        "Seconds from now" values count from the whole second of the scrape: certificate dates are whole
        seconds, so the values are too, and formatting a whole float costs a third of any other.
        """
        now = float(int(self._clock()))
        self._sync()
        # Counters change without a new result: rendered every scrape (one line per failing broker and
        # reason). Intervals change only with the configuration (the store replaces the mapping).
        counters, _ = _format(broker_samples([], self._store.failure_counts, {}, now=now))
        self.prepare_configuration()
        family_headers = _family_headers(headers)
        parts = [head.encode()]
        for family in BROKER_FAMILIES:
            parts.append(family_headers[family])
            if family in counters:
                parts.append("".join(counters[family]).encode())
            if family in self._configured:
                parts.append(self._configured[family])
            if family is PROBE_INTERVAL:
                parts.append(self._interval_lines)
            if family.relative_to_now:
                shift = family.now_slope * now
                relative = self._relative[family].values()
                parts.extend(
                    [b"%b%a\n" % (series, at + shift) for values in relative for series, at in values]
                )
            else:
                parts.extend(self._static[family].values())
        parts.append(tail.encode())
        return _joined(parts)


def _joined(parts: list[bytes]) -> bytes:
    """``b"".join(parts)`` without its buffer descriptor per part (80 bytes: 16 MB for the 200,000 parts of
    10,000 brokers), written into one buffer of the final size: never a copy of the body, never two."""
    size = sum(map(len, parts))
    body = io.BytesIO()
    if size:
        body.seek(size - 1)
        body.write(b"\0")  # the buffer at its final size at once (a growing one is copied as it grows)
        body.seek(0)
    body.writelines(parts)
    return body.getvalue()


class _Formatted(NamedTuple):
    """What a broker's text was formatted from, in two parts: no family has text from both."""

    results: tuple[ProbeResult, ...]
    #: the configuration of the broker then (the results and it give the ``lasting_key``)
    broker: BrokerConfig | None
    #: the families with text from ``lasting_samples`` and from ``per_probe_samples``
    lasting: Present
    per_probe: Present


#: one tuple for each set of families brokers have text in (a few dozen: kept by every broker)
_PRESENT: dict[Present, Present] = {}
_MAX_PRESENT: Final = 1 << 12


def _present(families: Present) -> Present:
    found = _PRESENT.get(families)
    if found is None:
        if len(_PRESENT) >= _MAX_PRESENT:
            _PRESENT.clear()
        found = _PRESENT[families] = families
    return found


def _same(formatted: tuple[ProbeResult, ...], results: tuple[ProbeResult, ...]) -> bool:
    return len(formatted) == len(results) and all(map(operator.is_, formatted, results))
