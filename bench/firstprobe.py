"""What the first probe of a chain never seen before costs on the certificates' side, in process.

    python -m bench.firstprobe [--leaves 2000] [--runs 5]
    python -m bench.firstprobe --baseline DIR   (DIR: an older checkout from 0427f3d on, when the probe
                                                 gained its Draft; e.g. `git worktree add DIR main`)
    python -m bench.firstprobe --profile good   (cProfile of this checkout, one kind)

No network, no handshake: OpenSSL's verdict is given as the handshake would give it. A lab PKI as in
bench/loadlab.py (one root, one intermediate shared by the fleet, an untrusted root) issues ``--leaves``
distinct leaves of each kind: ``good`` (leaf + intermediate, OpenSSL verified it), ``expired`` (leaf +
intermediate, verify error 10) and ``untrusted`` (a leaf alone from an unknown root, verify error 20).
Each leaf then goes once through what a probe does with a chain after the handshake: parse every DER,
the verdict (``Prober._verdict``: verdict cache, chain analysis), the result's TLS facts and
``Lifecycle.complete`` (lints, revocation candidates). The intermediate, the anchor and the trust store
are warm (other leaves of the fleet were seen before), the leaf is new: the first sweep's case.

``--baseline DIR`` runs the same in the code of an older checkout, in subprocesses alternating with this
one's, prints µs per new leaf of both side by side (best and median of the runs) and checks that both
sides produced the same verdicts and lints.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import datetime as dt
import hashlib
import inspect
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from mqtt_cert_exporter.certs import files
from mqtt_cert_exporter.certs.parse import Parsed, parse_der
from mqtt_cert_exporter.config import BrokerConfig, Target
from mqtt_cert_exporter.config.model import TlsSettings
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.memory import tune_garbage_collector
from mqtt_cert_exporter.probe.draft import Draft
from mqtt_cert_exporter.probe.prober import Prober
from mqtt_cert_exporter.probe.steps import Clock
from mqtt_cert_exporter.results import ProbeResult, TlsFacts, TrustVerdict

#: OpenSSL's verdict per kind, as the verifying handshake reports it (None: verified)
VERIFY: dict[str, tuple[int, str] | None] = {
    "good": None,
    "expired": (10, "certificate has expired"),
    "untrusted": (20, "unable to get local issuer certificate"),
}
KINDS = tuple(VERIFY)
#: leaves of each kind seen before the measured ones: imports, the intermediate, anchor and store warm
WARM_UP = 20


def build_lab(directory: Path, leaves: int) -> None:
    """The PKI of bench/loadlab.py, its chains as DER in ``directory/chains.json`` by kind."""
    pki = Pki(directory / "pki")
    root = pki.root("Bench Root")
    intermediate = pki.intermediate("Bench Intermediate", root)
    untrusted_root = pki.root("Untrusted Root")
    now = dt.datetime.now(dt.UTC)
    der = intermediate.cert.public_bytes(Encoding.DER)
    chains: dict[str, list[list[str]]] = {kind: [] for kind in KINDS}
    for index in range(leaves + WARM_UP):
        good = pki.leaf(f"good-{index}", intermediate, days=1 + (index * 37) % 400)
        expired = pki.leaf(
            f"expired-{index}", intermediate, not_after=now - dt.timedelta(days=1 + index % 90)
        )
        untrusted = pki.leaf(f"untrusted-{index}", untrusted_root, days=30 + index % 300)
        chains["good"].append([good.cert.public_bytes(Encoding.DER).hex(), der.hex()])
        chains["expired"].append([expired.cert.public_bytes(Encoding.DER).hex(), der.hex()])
        chains["untrusted"].append([untrusted.cert.public_bytes(Encoding.DER).hex()])
    (directory / "chains.json").write_text(json.dumps({"ca_file": str(root.cert_path), "chains": chains}))


def load_lab(directory: Path) -> tuple[str, dict[str, list[tuple[bytes, ...]]]]:
    lab = json.loads((directory / "chains.json").read_text())
    chains = {
        kind: [tuple(bytes.fromhex(der) for der in chain) for chain in found]
        for kind, found in lab["chains"].items()
    }
    return lab["ca_file"], chains


class FirstProbe:
    """What a probe does with a chain after its handshake, on one Prober (its caches kept throughout)."""

    def __init__(self, ca_file: str) -> None:
        self.prober = Prober()
        self.broker = BrokerConfig("bench", Target("localhost", 8883), tls=TlsSettings(ca_file=ca_file))
        # the probe passes the verdict step the trust store it looked up; in older checkouts (a
        # ``--baseline``) the step looked the store up itself. Asked once, outside the timed probes.
        self._step_takes_store = "store" in inspect.signature(self.prober._verdict).parameters  # noqa: SLF001 - the verdict step alone, without a handshake

    async def once(self, chain_der: tuple[bytes, ...], verify: tuple[int, str] | None) -> ProbeResult:
        # the same calls, in the same order, as Prober._handshake and Prober._complete
        clock = Clock(time.monotonic() + 10.0)
        presented = tuple(parse_der(der) for der in chain_der)
        verdict = await self._verdict(presented, clock, verify)
        tls = TlsFacts(
            version="TLSv1.3" if verify is None else "",
            cipher="TLS_AES_256_GCM_SHA384" if verify is None else "",
            chain=tuple(parsed.facts for parsed in presented),
            verdict=verdict,
        )
        draft = Draft.of(self.broker, time.time(), ip="127.0.0.1")
        draft.tls = tls
        around = await self.prober.lifecycle.complete(self.broker, draft, presented, deadline=clock.deadline)
        return draft.freeze((), around)

    async def _verdict(
        self, presented: tuple[Parsed, ...], clock: Clock, verify: tuple[int, str] | None
    ) -> TrustVerdict:
        """The verdict step alone, without a handshake, as the probe calls it."""
        step = self.prober._verdict  # noqa: SLF001 - the verdict step alone, without a handshake
        if not self._step_takes_store:
            return await step(presented, self.broker, clock, verify)  # type: ignore[call-arg, arg-type]
        store = files.trust_store(self.broker.tls.ca_file)
        return await step(presented, self.broker, store, clock, verify)

    async def run(
        self, chains: Sequence[tuple[bytes, ...]], verify: tuple[int, str] | None
    ) -> list[ProbeResult]:
        return [await self.once(chain, verify) for chain in chains]


def outcome(results: Sequence[ProbeResult]) -> str:
    """A digest of what the probes concluded: verdicts and lints (their words, less the renewal lint's
    days left, which move with the clock)."""
    digest = hashlib.sha256()
    for result in results:
        assert result.tls is not None
        digest.update(repr(result.tls.verdict).encode())
        for finding in result.lints:
            words = finding.detail if finding.lint != "renewal_overdue" else ""
            digest.update(repr((finding.lint, finding.positions, words)).encode())
    return digest.hexdigest()[:16]


def warmed(
    directory: Path, loop: asyncio.AbstractEventLoop
) -> tuple[FirstProbe, dict[str, list[tuple[bytes, ...]]]]:
    """A FirstProbe that has seen ``WARM_UP`` leaves of each kind, and the leaves it has not seen."""
    ca_file, chains = load_lab(directory)
    probe = FirstProbe(ca_file)
    for kind in KINDS:
        loop.run_until_complete(probe.run(chains[kind][:WARM_UP], VERIFY[kind]))
    tune_garbage_collector()  # as the daemon does before probing
    return probe, {kind: found[WARM_UP:] for kind, found in chains.items()}


def measure(directory: Path) -> dict[str, float | str]:
    """µs per new leaf of each kind (one pass over distinct leaves: a leaf is new only once)."""
    loop = asyncio.new_event_loop()
    probe, chains = warmed(directory, loop)
    found: dict[str, float | str] = {}
    for kind in KINDS:
        started = time.process_time()
        results = loop.run_until_complete(probe.run(chains[kind], VERIFY[kind]))
        found[kind] = (time.process_time() - started) / len(chains[kind]) * 1e6
        found[f"{kind} outcome"] = outcome(results)
    loop.close()
    return found


def profile(directory: Path, kind: str, top: int) -> None:
    loop = asyncio.new_event_loop()
    probe, chains = warmed(directory, loop)
    profiler = cProfile.Profile()
    profiler.enable()
    loop.run_until_complete(probe.run(chains[kind], VERIFY[kind]))
    profiler.disable()
    loop.close()
    stats = pstats.Stats(profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)


def against(baseline: Path | None, directory: Path, runs: int) -> None:
    """This code and ``baseline``'s (its ``exporter/`` imported as the package) in alternating subprocesses."""
    here = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as packages:
        sides = {"after": os.environ.get("PYTHONPATH", "")}
        if baseline is not None:
            os.symlink(baseline.resolve() / "exporter", Path(packages) / "mqtt_cert_exporter")
            sides = {"before": packages, **sides}
        found: dict[str, list[dict[str, float | str]]] = {side: [] for side in sides}
        for _ in range(runs):
            for side, path in sides.items():
                command = [sys.executable, "-m", "bench.firstprobe", "--measure", str(directory)]
                env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (path, str(here))))}
                done = subprocess.run(command, env=env, cwd=here, check=True, capture_output=True, text=True)
                found[side].append(json.loads(done.stdout.splitlines()[-1]))
    print(f"µs of CPU per new leaf, {runs} alternating runs each (best / median)")
    print(
        f"{'kind':<10}" + "".join(f"{side:>22}" for side in sides) + ("  ratio of best" if baseline else "")
    )
    for kind in KINDS:
        cells = []
        bests = {}
        for side in sides:
            values = [float(run[kind]) for run in found[side]]
            bests[side] = min(values)
            cells.append(f"{min(values):>12.1f} / {statistics.median(values):>7.1f}")
        ratio = f"  {bests['before'] / bests['after']:.2f}x" if baseline else ""
        print(f"{kind:<10}" + "".join(f"{cell:>22}" for cell in cells) + ratio)
    if baseline is not None:
        differ = [
            kind
            for kind in KINDS
            if {run[f"{kind} outcome"] for run in found["before"]}
            != {run[f"{kind} outcome"] for run in found["after"]}
        ]
        print(
            "verdicts and lints: "
            + (f"DIFFERENT for {', '.join(differ)}" if differ else "the same on both sides")
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--leaves", type=int, default=2000, help="distinct new leaves of each kind")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline", type=Path, help="an older checkout to compare with, side by side")
    parser.add_argument("--lab", type=Path, help="reuse the chains written by an earlier run here")
    parser.add_argument("--profile", choices=KINDS, help="cProfile one kind in this checkout")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # one side's run, as JSON
    options = parser.parse_args()
    if options.measure:
        print(json.dumps(measure(options.measure)))
        return
    with tempfile.TemporaryDirectory() as scratch:
        directory = options.lab or Path(scratch)
        if not (directory / "chains.json").exists():
            build_lab(directory, options.leaves)
        if options.profile:
            profile(directory, options.profile, options.top)
        else:
            against(options.baseline, directory, options.runs)


if __name__ == "__main__":
    main()
