"""Our exporter against blackbox_exporter and the TLS handshake floor, side by side, in one run.

    python -m bench.compare [--brokers 1000] [--black-holes-share 0.1] [--expired-share 0.1]
                            [--concurrency 100] [--timeout 5] [--interval SECONDS] [--no-profile]
                            [--keep DIR] [--write-doc [PATH]]
    python -m bench            # the same (``make bench``)

Builds a load lab on loopback -- Mosquitto processes with up to 2000 TLS listeners each, one distinct
certificate per listener (EC P-256, leaf + intermediate, expiry spread over a year), a share expired or
untrusted, a share of black holes (TCP connect never completes) -- and then measures, on that same lab:

1. ``openssl s_time -new`` against one listener: the handshake floor (client CPU per full handshake);
2. blackbox_exporter (Debian's ``prometheus-blackbox-exporter``): every broker through ``/probe``, all at
   once, ``--concurrency`` at a time, with a verifying ``tcp`` + ``tls: true`` module and with the
   ``insecure_skip_verify`` module it needs to see an expired certificate's dates; its CPU from /proc;
   then in steady state, scraped by a real Prometheus (``bench.scraper``: one target per broker, each at
   the offset Prometheus gives it);
3. our exporter as users run it (``python -m mqtt_cert_exporter`` with a config, scheduled mode): the first sweep
   (wall time, CPU), ``/metrics`` with every broker (the first scrape formats every result, then the
   median of 5 that reuse it), one steady-state interval (CPU per probe, schedule lag), then a profile
   of a further interval (py-spy ``--gil`` for the Python side; perf, when installed, by layer);
4. blackbox_exporter in steady state once more, scraped by Prometheus, then driven on our exporter's grid
   (its best case: the requests of a tick together, a batching no Prometheus does), and the floor again:
   the machine drifts over the minutes between the passes, so ours is compared with blackbox's two
   Prometheus-driven passes pooled, one right before ours and one right after.

Prints a table (ours, blackbox, ratios), the issue's targets met or not, the capacity at a 60 s interval
on 2 cores and the profile summary; ``--write-doc`` writes all of it with the machine description to
docs/performance.md. Ratios, not absolute times, are what carries to other machines; tests never assert
on these figures.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import time
from collections.abc import Sequence
from pathlib import Path

from bench.comparison import Machine, Results
from bench.figures import report
from bench.firstsweep import run_passes
from bench.format import fleet_texts, handoff_seconds
from bench.loadlab import (
    BLACKBOX_MODULES,
    add_lab_arguments,
    announced_fleet,
    blackbox,
    memory_mb,
    work_directory,
)
from bench.passes import (
    BlackboxPass,
    auto_interval,
    blackbox_pass,
    blackbox_scraped_pass,
    handshake_floor,
    run_exporter,
    run_lean,
)
from bench.performance_doc import DOC, document
from bench.profiling import ROOT

# ------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> None:  # noqa: PLR0915 - one flag per line, then the run
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n\n")[0])
    add_lab_arguments(parser, brokers=1000, concurrency=100)
    parser.add_argument("--interval", type=float, default=None, help="of the steady state (default: auto)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip py-spy and perf")
    parser.add_argument(
        "--write-doc",
        nargs="?",
        const=DOC,
        type=Path,
        metavar="PATH",
        help=f"write the results page (default {DOC.relative_to(ROOT)})",
    )
    args = parser.parse_args(argv)
    begun = time.monotonic()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = Machine.describe()
    interval = args.interval or auto_interval(
        args.brokers, args.black_holes_share, args.timeout, args.concurrency
    )
    load = {"concurrency": args.concurrency, "timeout": args.timeout}
    scraping = {"interval": interval, "timeout": args.timeout}
    with contextlib.ExitStack() as stack:
        directory = work_directory(stack, args.keep, "bench-compare-")
        shares = (args.black_holes_share, args.expired_share)
        with announced_fleet(directory, args.brokers, *shares) as (lab, kinds):
            print("1. the handshake floor: openssl s_time ...", flush=True)
            floors = [handshake_floor(lab.floor_port)]
            passes: list[BlackboxPass] = []
            print("2. blackbox_exporter, every broker at once, both modules ...", flush=True)
            with blackbox(directory / "blackbox", lab.ca_file, args.timeout) as (base, pid):
                for module in BLACKBOX_MODULES:
                    passes.append(blackbox_pass(base, pid, lab, module, **load))
                print(
                    f"2a. blackbox_exporter scraped by Prometheus, steady state over {interval:g} s (again "
                    "after ours) ...",
                    flush=True,
                )
                passes.append(
                    blackbox_scraped_pass(base, pid, lab, "mqtt_tls", directory / "prometheus", **scraping)
                )
                blackbox_rss = memory_mb(pid)
            targets = [broker.address for broker in lab.brokers]
            print("2b. the lean prober (bench/lean.py), every broker at once ...", flush=True)
            lean = [run_lean(targets, lab.ca_file, directory / "lean", profile=False, **load)[0]]
            print(
                f"3. our exporter: first sweep, /metrics, a steady interval of {interval:g} s, a profile ..."
            )
            ours = run_exporter(lab, directory / "exporter", interval=interval, profile=args.profile, **load)
            print(
                f"4. blackbox_exporter scraped by Prometheus, then on our grid, steady state over {interval:g} s "
                "each; the floor again ...",
                flush=True,
            )
            with blackbox(directory / "blackbox", lab.ca_file, args.timeout) as (base, pid):
                passes.append(
                    blackbox_scraped_pass(base, pid, lab, "mqtt_tls", directory / "prometheus", **scraping)
                )
                passes.append(blackbox_pass(base, pid, lab, "mqtt_tls", interval=interval, **load))
                blackbox_rss = max(blackbox_rss, memory_mb(pid))
            print(f"4b. the lean prober, steady state over {interval:g} s (profiled) ...", flush=True)
            steady, lean_profile = run_lean(
                targets, lab.ca_file, directory / "lean", interval=interval, profile=args.profile, **load
            )
            lean.append(steady)
            floors.append(handshake_floor(lab.floor_port))
            print(
                "6. the first sweep on the cores: one process, two shards, blackbox_exporter ...", flush=True
            )
            first_sweeps = run_passes(lab, directory / "firstsweep", **load)
            build = lab.build_seconds
    results = Results(args, machine, build, kinds, floors, passes, blackbox_rss, ours, started)
    results.lean, results.lean_profile = lean, lean_profile
    results.first_sweeps = first_sweeps
    print("5. /metrics of 10,000 brokers under each --metrics.chain (bench.format) ...", flush=True)
    results.texts = fleet_texts(10_000)
    results.handoff = handoff_seconds()
    results.seconds = time.monotonic() - begun
    print()
    print(report(results))
    if args.write_doc:
        args.write_doc.parent.mkdir(parents=True, exist_ok=True)
        args.write_doc.write_text(document(results))
        print(f"wrote {args.write_doc}")


if __name__ == "__main__":
    main()
