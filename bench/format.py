"""What formatting one published result costs, and what a /metrics scrape of a big fleet costs.

    python -m bench.format [--brokers 10000] [--repeat 2000]   (--repeat 0: the fleet only)
    python -m bench.format --baseline DIR   (DIR: an older checkout, e.g. `git archive main | tar -x -C DIR`)

No network: the results are built by hand (a healthy broker with a two-certificate chain, lints,
revocation and the served-file check; an untrusted one; one refused). Runs the formatting the daemon did
before (prometheus_client metric families, kept below for the comparison only) and the current one side by
side on the same results, checks they produce the same text, and reports the per-result ratio. Then
publishes one result per broker the way the daemon does (``store.publish`` then ``exposition.prepare``)
and times the body of a scrape (``BrokerExposition.body()``).

Steady state is what the daemon spends on most publishes: a broker's next result, its chain's facts (parsed
certificates, verdict) the very objects of the previous one (the probe's caches), session facts, lints and
revocation new but equal, durations and times new. ``--baseline DIR`` measures the same in the code of an
older checkout, in subprocesses alternating with this one's, and prints both side by side.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import itertools
import json
import math
import os
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

from prometheus_client.core import Metric
from prometheus_client.utils import floatToGoString

from mqtt_cert_exporter import exposition
from mqtt_cert_exporter.collector import ChainDetail, broker_families, broker_samples
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.exposition import BrokerExposition
from mqtt_cert_exporter.families import BROKER_FAMILIES, Family
from mqtt_cert_exporter.results import (
    CertFacts,
    Failure,
    Lint,
    LintFinding,
    MqttFacts,
    Phase,
    ProbeResult,
    Problem,
    Reason,
    RevocationCheck,
    RevocationFacts,
    RevocationStatus,
    ServedFileFacts,
    Stage,
    TlsFacts,
    TrustVerdict,
)
from mqtt_cert_exporter.store import ResultStore

NOW = 1_750_000_000.0


def cert(name: str, issuer: str, *, ca: bool = False, not_after: float = NOW + 60 * 86400) -> CertFacts:
    return CertFacts(
        fingerprint_sha256=(name.encode().hex() * 64)[:64],
        subject=f"CN={name},O=Example Corp,C=DE",
        issuer=f"CN={issuer},O=Example Corp,C=DE",
        serial="4f2a9c01d3e57b6688aa10cd3e5f7a9b",
        not_before=NOW - 30 * 86400,
        not_after=not_after,
        dns_names=() if ca else (name, f"mqtt-{name}", "localhost"),
        ip_addresses=() if ca else ("10.0.0.7",),
        common_name=name,
        key="EC-P256",
        key_bits=256,
        signature_algorithm="ecdsa-with-SHA256",
        signature_hash="sha256",
        is_ca=ca,
        self_issued=False,
        crl_urls=("http://crl.example.com/ca.crl",),
    )


def healthy(broker: str) -> ProbeResult:
    leaf = cert(f"{broker}.example.com", "Example Issuing CA")
    intermediate = cert("Example Issuing CA", "Example Root CA", ca=True, not_after=NOW + 900 * 86400)
    root = cert("Example Root CA", "Example Root CA", ca=True, not_after=NOW + 3650 * 86400)
    return ProbeResult(
        broker=broker,
        address=f"{broker}.example.com:8883",
        ip="10.0.0.7",
        started=NOW - 0.05,
        finished=NOW,
        durations=(
            (Phase.RESOLVE, 0.0012),
            (Phase.CONNECT, 0.0031),
            (Phase.TLS, 0.0213),
            (Phase.MQTT, 0.0048),
            (Phase.TOTAL, 0.0311),
        ),
        failure=None,
        tls=TlsFacts(
            "TLSv1.3",
            "TLS_AES_256_GCM_SHA384",
            (leaf, intermediate),
            TrustVerdict(True, anchor=root),
            alpn_protocol="mqtt",
        ),
        mqtt=MqttFacts("5", 0),
        served_file=ServedFileFacts("/etc/mosquitto/cert.pem", "/etc/mosquitto/cert.pem", leaf, NOW, True),
        revocation=RevocationFacts(
            (RevocationCheck(0, RevocationStatus.GOOD), RevocationCheck(1, RevocationStatus.GOOD)), True
        ),
        lints=(
            LintFinding(Lint.LEAF_VALIDITY_OVER_398_DAYS, "valid for 400 days", (0,)),
            LintFinding(Lint.CHAIN_OUT_OF_ORDER, "out of order", (0, 1)),
            LintFinding(Lint.LEGACY_TLS_ACCEPTED, "TLSv1.1 accepted"),
        ),
    )


def untrusted(broker: str) -> ProbeResult:
    leaf = cert(f"{broker}.example.com", f"{broker}.example.com", not_after=NOW - 86400)
    return ProbeResult(
        broker=broker,
        address=f"{broker}.example.com:8883",
        ip="10.0.0.8",
        started=NOW - 0.05,
        finished=NOW,
        durations=((Phase.RESOLVE, 0.001), (Phase.CONNECT, 0.002), (Phase.TLS, 0.02), (Phase.TOTAL, 0.03)),
        failure=Failure(Stage.TRUST, Reason.UNTRUSTED, "expired"),
        tls=TlsFacts(
            "TLSv1.2",
            "ECDHE-RSA-AES128-GCM-SHA256",
            (leaf,),
            TrustVerdict(False, (Problem.EXPIRED, Problem.SELF_SIGNED)),
        ),
        mqtt=MqttFacts("3.1.1", 5, unverified_connection=True),
    )


def refused(broker: str) -> ProbeResult:
    return ProbeResult(
        broker=broker,
        address=f"{broker}.example.com:8883",
        ip="10.0.0.9",
        started=NOW - 0.002,
        finished=NOW,
        durations=((Phase.RESOLVE, 0.001), (Phase.CONNECT, 0.001), (Phase.TOTAL, 0.002)),
        failure=Failure(Stage.CONNECT, Reason.REFUSED, "refused"),
    )


BUILDERS: dict[str, Callable[[str], ProbeResult]] = {
    "healthy": healthy,
    "untrusted": untrusted,
    "refused": refused,
}


# --------------------------------------------------------------------------------------------------
# The formatting before: prometheus_client families -> text (exporter/exposition.py, for comparison only)


def _old_escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _old_series(name: str, labels: Mapping[str, str]) -> str:
    if not labels:
        return name
    return name + "{" + ",".join(f'{key}="{_old_escape(value)}"' for key, value in labels.items()) + "}"


def _old_number(value: float) -> str:
    return cast(str, floatToGoString(value))  # type: ignore[no-untyped-call]


def _old_lines(families: Iterable[Metric], name: str) -> Iterator[str]:
    for family in families:
        if family.name == name:
            for sample in family.samples:
                yield f"{_old_series(sample.name, sample.labels)} {_old_number(sample.value)}\n"


_RELATIVE_NAMES = {family.name for family in BROKER_FAMILIES if family.relative_to_now}
OldRendered = tuple[dict[str, str], dict[str, tuple[tuple[str, float], ...]]]


def old_render(results: Sequence[ProbeResult]) -> OldRendered:
    static: dict[str, str] = {}
    relative: dict[str, tuple[tuple[str, float], ...]] = {}
    for family in broker_families([tuple(results)], {}, {}, now=0.0):
        if not family.samples:
            continue
        if family.name in _RELATIVE_NAMES:
            relative[family.name] = tuple((_old_series(s.name, s.labels), s.value) for s in family.samples)
        else:
            static[family.name] = "".join(_old_lines([family], family.name))
    return static, relative


Formatted = tuple[dict[Family, str], exposition.Relative]


def new_format(results: Sequence[ProbeResult]) -> Formatted:
    """What ``BrokerExposition.prepare`` does with a result (without storing it)."""
    lines, relative = exposition._format(broker_samples([tuple(results)], {}, {}, now=0.0))  # noqa: SLF001 - the formatting step timed on its own
    return {family: "".join(texts) for family, texts in lines.items()}, relative


def comparable(formatted: Formatted) -> OldRendered:
    lines, relative = formatted
    series = {
        family.name: tuple((text.removesuffix(" "), value) for text, value in found)
        for family, found in relative.items()
    }
    return {family.name: text for family, text in lines.items()}, series


# --------------------------------------------------------------------------------------------------


def best(functions: Sequence[Callable[[], object]], repeat: int, rounds: int = 9) -> list[float]:
    """Best seconds per call of each function, their rounds interleaved so that noise hits them alike."""
    timings: list[list[float]] = [[] for _ in functions]
    for _ in range(rounds):
        for function, found in zip(functions, timings, strict=True):
            gc.collect()
            started = time.perf_counter()
            for _ in range(repeat):
                function()
            found.append((time.perf_counter() - started) / repeat)
    return [min(found) for found in timings]


def measure(build: Callable[[str], ProbeResult], repeat: int) -> list[float]:
    """Seconds per call: the old formatting, the new one, and the whole publish + ``prepare``."""
    results = (build("broker-0042"),)
    assert old_render(results) == comparable(new_format(results)), "the text differs"
    store = ResultStore()
    view = BrokerExposition(store)
    published = itertools.cycle([build("broker-0042") for _ in range(16)])

    def prepare() -> None:
        store.publish([next(published)])
        view.prepare("broker-0042")

    return best([lambda: old_render(results), lambda: new_format(results), prepare], repeat)


def compare(repeat: int) -> None:
    print(f"per-result formatting, best of 9 rounds of {repeat} calls")
    print(f"{'result':<10} {'before µs':>10} {'after µs':>10} {'ratio':>7} {'publish+prepare µs':>19}")
    for kind, build in BUILDERS.items():
        before, after, prepared = measure(build, repeat)
        ratio = before / after
        print(f"{kind:<10} {before * 1e6:>10.1f} {after * 1e6:>10.1f} {ratio:>6.1f}x {prepared * 1e6:>19.1f}")


def successor(result: ProbeResult, step: int) -> ProbeResult:
    """The broker's result ``step`` probes later, as the daemon makes it in steady state: the chain's
    parsed certificates and verdict are the same objects (the probe's caches); the session facts, lints,
    revocation and the rest are new objects with equal values; times and durations move."""
    tls = result.tls
    revocation = result.revocation
    return replace(
        result,
        started=result.started + 60 * step,
        finished=result.finished + 60 * step,
        durations=tuple((phase, seconds * (1 + step / 997)) for phase, seconds in result.durations),
        failure=None if result.failure is None else replace(result.failure),
        tls=None if tls is None else replace(tls, chain=tuple(list(tls.chain))),
        mqtt=None if result.mqtt is None else replace(result.mqtt),
        served_file=None if result.served_file is None else replace(result.served_file),
        revocation=None
        if revocation is None
        else replace(revocation, checks=tuple(replace(check) for check in revocation.checks)),
        lints=tuple(replace(finding) for finding in result.lints),
    )


def renewed(result: ProbeResult, step: int) -> ProbeResult:
    """``successor`` with a new leaf: the worst case, where nothing of the previous text can be kept."""
    following = successor(result, step)
    assert following.tls is not None
    leaf = replace(following.tls.chain[0], serial=f"{step:x}", fingerprint_sha256=f"{step:064x}")
    return replace(following, tls=replace(following.tls, chain=(leaf, *following.tls.chain[1:])))


#: what each kind of result is followed by in steady state
STEADY: dict[str, tuple[Callable[[str], ProbeResult], Callable[[ProbeResult, int], ProbeResult]]] = {
    **{kind: (build, successor) for kind, build in BUILDERS.items()},
    "renewed": (healthy, renewed),
}


def steady_publish(kind: str, repeat: int) -> tuple[float, float]:
    """Seconds per steady-state publish of one broker: ``store.publish`` alone, and with ``prepare``."""
    store = ResultStore()
    view = BrokerExposition(store)
    build, follow = STEADY[kind]
    first = build("broker-0042")
    results = [follow(first, step) for step in range(1, 65)]
    store.publish([first])
    view.prepare(first.broker)
    published = itertools.cycle(results)

    def publish() -> None:
        store.publish([next(published)])

    def prepare() -> None:
        store.publish([next(published)])
        view.prepare("broker-0042")

    return cast(tuple[float, float], tuple(best([publish, prepare], repeat)))


STEADY_FORMAT = "{:<10} {:>12.1f} {:>12.1f} {:>14.1f}"


def steady(repeat: int) -> dict[str, float]:
    """Steady-state µs of prepare (publish+prepare less publish) per kind of result (renewed: a healthy
    broker whose leaf changes at every probe, the worst case)."""
    print(f"steady-state publish of one broker, best of 9 rounds of {repeat} calls")
    print(f"{'result':<10} {'publish µs':>12} {'+prepare µs':>12} {'prepare µs':>14}")
    found = {}
    for kind in STEADY:
        publish, prepared = steady_publish(kind, repeat)
        found[kind] = (prepared - publish) * 1e6
        print(STEADY_FORMAT.format(kind, publish * 1e6, prepared * 1e6, found[kind]))
    return found


@contextlib.contextmanager
def sides_of(baseline: Path) -> Iterator[dict[str, Callable[[list[str]], str]]]:
    """ "before" and "after": each runs Python with the given arguments (in a subprocess, from this checkout's
    root: its ``bench``) on the package of ``baseline`` (a checkout: its ``exporter/``) or of this checkout,
    and returns what it printed."""
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as packages:
        os.symlink(baseline.resolve() / "exporter", Path(packages) / "mqtt_cert_exporter")

        def side(path: str) -> Callable[[list[str]], str]:
            def run(arguments: list[str]) -> str:
                env = {**os.environ, "PYTHONPATH": path}
                command = [sys.executable, *arguments]
                return subprocess.run(
                    command, env=env, cwd=here, check=True, capture_output=True, text=True
                ).stdout

            return run

        yield {"before": side(f"{packages}{os.pathsep}{here}"), "after": side(str(here))}


def against(baseline: Path, repeat: int, brokers: int, runs: int = 5) -> None:
    """This code and ``baseline``'s (a checkout: its ``exporter/`` is imported as the package) measured by
    this benchmark in alternating subprocesses; the best of ``runs`` each."""
    with sides_of(baseline) as sides:
        found: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for _ in range(runs):
            for side, run in sides.items():
                command = ["-m", "bench.format", "--json", "--repeat", str(repeat), "--brokers", str(brokers)]
                found[side].append(json.loads(run(command).splitlines()[-1]))
    bests = {side: {key: min(run[key] for run in runs_) for key in runs_[0]} for side, runs_ in found.items()}
    print(f"before ({baseline}) and after (this checkout), best of {runs} alternating runs each")
    print(f"{'':<44} {'before':>9} {'after':>9} {'ratio':>7}")
    for key in bests["after"]:
        before, after = bests["before"].get(key, math.nan), bests["after"][key]
        print(f"{key:<44} {before:>9.1f} {after:>9.1f} {before / after:>6.2f}x")


def quick(repeat: int, brokers: int) -> dict[str, float]:
    """The figures ``--baseline`` compares: steady-state prepare µs per kind, and the default fleet's
    steady publish+prepare µs per result and render ms."""
    found = {}
    for kind in STEADY:
        publish, prepared = steady_publish(kind, repeat)
        found[f"steady prepare µs, {kind}"] = (prepared - publish) * 1e6
    text = fleet(brokers, ChainDetail.LEAF_EARLIEST)
    found[f"{brokers} brokers: first publish+prepare µs"] = text.publish / brokers * 1e6
    found[f"{brokers} brokers: steady publish+prepare µs"] = text.steady_publish / brokers * 1e6
    found[f"{brokers} brokers: render ms"] = text.render * 1e3
    return found


def with_root(result: ProbeResult) -> ProbeResult:
    """The result with the root sent as well (leaf, intermediate, root: a common broker configuration)."""
    assert result.tls is not None and result.tls.verdict.anchor is not None
    chain = (*result.tls.chain, result.tls.verdict.anchor)
    return dataclasses.replace(result, tls=dataclasses.replace(result.tls, chain=chain))


@dataclass(frozen=True)
class FleetText:
    """/metrics of a synthetic fleet (80% healthy, 10% untrusted, 10% refused), measured in process."""

    brokers: int
    chain: ChainDetail
    root_sent: bool  # healthy chains are leaf, intermediate, root (else leaf, intermediate)
    publish: float  # seconds to publish + prepare every result (each broker's first)
    render: float  # median seconds of the body of a scrape with every broker formatted
    series: int
    bytes: int
    gzip_bytes: int  # at aiohttp's level (6)
    gzip_seconds: float  # compressing it (aiohttp does it in a thread: not blocking the loop)
    steady_publish: float  # seconds to publish + prepare every broker's next result (``successor``)

    def line(self) -> str:
        chains = "leaf, intermediate, root" if self.root_sent else "leaf, intermediate"
        return (
            f"{self.brokers} brokers, healthy chains {chains}, --metrics.chain={self.chain}: "
            f"render {self.render * 1e3:.0f} ms; {self.series} series ({self.series / self.brokers:.1f} per "
            f"broker), {self.bytes / 2**20:.1f} MiB, gzip {self.gzip_bytes / 2**20:.2f} MiB "
            f"(compressed in {self.gzip_seconds * 1e3:.0f} ms); publish+prepare per result: first "
            f"{self.publish / self.brokers * 1e6:.0f} µs, steady {self.steady_publish / self.brokers * 1e6:.1f} µs"
        )


def publish_all(store: ResultStore, view: BrokerExposition, results: Sequence[ProbeResult]) -> float:
    """Seconds to publish and prepare each result, as the daemon does."""
    gc.collect()
    started = time.perf_counter()
    for result in results:
        store.publish([result])
        view.prepare(result.broker)
    return time.perf_counter() - started


def scrape_body(view: BrokerExposition) -> bytes:
    """The body the /metrics handler sends (of an older checkout, without ``body``: its text, encoded)."""
    body: Callable[[], bytes] | None = getattr(view, "body", None)
    return body() if body is not None else view.render().encode()


def fleet(brokers: int, chain: ChainDetail = ChainDetail.ALL, root_sent: bool = False) -> FleetText:
    store = ResultStore()
    names = [f"broker-{i:05d}" for i in range(brokers)]
    store.configure({name: BrokerConfig(name, Target(f"{name}.example", 8883)) for name in names})
    view = BrokerExposition(store, clock=lambda: NOW + 10.0, chain=chain)
    good = (lambda name: with_root(healthy(name))) if root_sent else healthy
    results = [
        (refused, untrusted)[i % 10](name) if i % 10 < 2 else good(name)
        for i, name in enumerate(store.intervals)
    ]
    publishing = publish_all(store, view, results)
    steady_publishing = publish_all(store, view, [successor(result, 1) for result in results])
    scrape_body(view)  # the first scrape formats the intervals
    timings = []
    for _ in range(5):
        gc.collect()
        started = time.perf_counter()
        body = scrape_body(view)
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    packed = zlib.compress(body, 6)
    packing = time.perf_counter() - started
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return FleetText(
        brokers,
        chain,
        root_sent,
        publishing,
        statistics.median(timings),
        series,
        len(body),
        len(packed),
        packing,
        steady_publishing,
    )


def handoff_seconds(repeat: int = 2000) -> float:
    """Seconds to hand one healthy result from a worker process to another (pickle, then unpickle): what
    worker processes merging into one /metrics would add per probe, before any transport."""
    result = healthy("broker-00042")
    return best([lambda: pickle.loads(pickle.dumps(result))], repeat)[0]


def fleet_texts(brokers: int) -> list[FleetText]:
    """Both chain shapes, each under every --metrics.chain."""
    return [fleet(brokers, chain, root_sent) for root_sent in (False, True) for chain in ChainDetail]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--brokers", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2_000)
    parser.add_argument("--baseline", type=Path, help="an older checkout to compare with, side by side")
    parser.add_argument(
        "--json", action="store_true", help="(for --baseline) the figures it compares, as JSON"
    )
    options = parser.parse_args()
    if options.json:
        print(json.dumps(quick(options.repeat, options.brokers)))
        return
    if options.baseline:
        against(options.baseline, options.repeat, options.brokers)
        return
    if options.repeat:
        compare(options.repeat)
        steady(options.repeat)
    for found in fleet_texts(options.brokers):
        print(found.line())


if __name__ == "__main__":
    main()
