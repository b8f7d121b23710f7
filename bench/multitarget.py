"""Multi-target mode against blackbox_exporter: every broker's ``/probe`` at once (issue 16).

    python -m bench.multitarget [--brokers 1000] [--black-holes-share 0] [--expired-share 0]
                                [--concurrency 128] [--timeout 5] [--rounds 3]
                                [--baseline DIR] [--keep DIR]

On the load lab of ``bench.compare``, blackbox_exporter and our exporter in multi-target mode
(``--probe.allowed-target``, a module verifying against the lab's CA and server name, as blackbox's
``mqtt_tls`` module does) each get every broker's ``/probe`` at once, ``--concurrency`` at a time, from the
same asyncio HTTP client (gzip accepted, as Prometheus does). CPU of each exporter process from /proc,
per request: the probe, the HTTP request and the metrics of its answer.

Ours' first pass meets every chain for the first time (parses it, OpenSSL judges it, the MQTT version is
learnt); the passes after it are what a replica behind a Service does all day. Each round runs every side
once, in an order that alternates (the machine drifts: compare within a round). ``--baseline DIR`` adds an
older checkout's exporter (its ``exporter/`` imported as the package) side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.loadlab import (
    BLACKBOX_ANSWER,
    OUR_ANSWER,
    ProbeAnswer,
    add_lab_arguments,
    announced_fleet,
    blackbox,
    builds,
    cpu_of,
    drive_blackbox,
    work_directory,
)
from tests.lab.process import start_exporter_process, stop_process

#: a module named as blackbox's verifying module, so one driver asks both for ``module=mqtt_tls``
MODULE = "mqtt_tls"


@dataclass
class Side:
    name: str
    base: str
    pid: int
    answer: ProbeAnswer | None = None  # None: blackbox_exporter's
    passes: list[float] = field(default_factory=list)  # CPU ms per request, warm passes
    first: float = float("nan")  # ours: the pass that met every chain first


def measure(side: Side, targets: Sequence[str], concurrency: int, timeout: float) -> tuple[float, int]:
    """One pass: (CPU ms per request, requests that reported success)."""
    before = cpu_of(side.pid)
    answer = BLACKBOX_ANSWER if side.answer is None else side.answer
    _, succeeded, _ = asyncio.run(
        drive_blackbox(side.base, targets, MODULE, concurrency, timeout, answer=answer)
    )
    return (cpu_of(side.pid) - before).total / len(targets) * 1e3, succeeded


def our_config(directory: Path, ca_file: Path, timeout: float) -> Path:
    config = directory / "multitarget.yaml"
    config.write_text(
        f"modules:\n  {MODULE}:\n    timeout: {timeout:g}s\n"
        f"    tls: {{ca_file: '{ca_file}', server_name: localhost}}\n"
    )
    return config


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.multitarget", description=__doc__.split("\n\n")[0])
    add_lab_arguments(parser, brokers=1000, concurrency=128)
    parser.set_defaults(black_holes_share=0.0, expired_share=0.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="an older checkout, its exporter side by side")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        directory = work_directory(stack, args.keep, "mqtt-multitarget-")
        fleet, _ = stack.enter_context(
            announced_fleet(directory, args.brokers, args.black_holes_share, args.expired_share)
        )
        targets = [broker.address for broker in fleet.brokers]
        bb_base, bb_pid = stack.enter_context(blackbox(directory / "blackbox", fleet.ca_file, args.timeout))
        sides = [Side("blackbox_exporter", bb_base, bb_pid)]
        config = our_config(directory, fleet.ca_file, args.timeout)
        flags = (r"--probe.allowed-target=127\.0\.0\.1:\d+", f"--probe.concurrency={args.concurrency}")
        for name, path in stack.enter_context(builds(args.baseline)).items():
            log = directory / f"{name}.log"
            process, base = start_exporter_process(config, log, *flags, env={"PYTHONPATH": path})
            stack.callback(stop_process, process)
            sides.append(Side(name, base, process.pid, OUR_ANSWER))
        ours = sides[1:]
        for side in ours:
            side.first, succeeded = measure(side, targets, args.concurrency, args.timeout)
            print(
                f"{side.name}, first pass: {side.first:.3f} ms per request ({succeeded} succeeded)",
                flush=True,
            )
        for round_number in range(args.rounds):
            order = sides if round_number % 2 == 0 else sides[::-1]
            for side in order:
                cpu, succeeded = measure(side, targets, args.concurrency, args.timeout)
                side.passes.append(cpu)
                print(
                    f"round {round_number + 1}, {side.name}: {cpu:.3f} ms per request ({succeeded} succeeded)",
                    flush=True,
                )
        report(sides, len(targets), args.concurrency)


def report(sides: Sequence[Side], requests: int, concurrency: int) -> None:
    blackbox_side = sides[0]
    print(f"\nCPU per /probe request (ms), {requests} targets at once, concurrency {concurrency}")
    print("| exporter | first pass | warm passes | median | / blackbox_exporter, same round |")
    print("|---|---|---|---|---|")
    for side in sides:
        ratios = [mine / theirs for mine, theirs in zip(side.passes, blackbox_side.passes, strict=True)]
        first = "" if side is blackbox_side else f"{side.first:.2f}"
        warm = ", ".join(f"{cpu:.2f}" for cpu in side.passes)
        per_round = "" if side is blackbox_side else ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"| {side.name} | {first} | {warm} | {statistics.median(side.passes):.2f} | {per_round} |")


if __name__ == "__main__":
    main()
