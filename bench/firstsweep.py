"""The first sweep on 2 cores (issue 16): one process against two shards, blackbox_exporter and the lab's floor.

    python -m bench.firstsweep [--brokers 2000] [--black-holes-share 0.1] [--expired-share 0.1]
                               [--concurrency 400] [--timeout 5] [--rounds 1] [--keep DIR]
                               [--baseline DIR]

On the load lab of ``bench.compare`` (Mosquitto processes, a share of black holes), side by side, each
pass on a fresh exporter process so that every broker is probed for the first time:

1. one exporter process probing every broker (``--probe.concurrency``);
2. two exporter processes started together, ``--shard=0/2`` and ``--shard=1/2`` (the same concurrency
   each), wall time from the first probe's start to the last result over both;
3. blackbox_exporter, every broker's ``/probe`` at once, ``--concurrency`` at a time, and with no bound;

and for each, the brokers' CPU (every Mosquitto process, from /proc) while it ran. The lab's floor on 2
shared cores is (client CPU + broker CPU) / 2: no prober finishes the sweep before that, nor before one
timeout while black holes are in the fleet. ``--rounds`` repeats the passes, interleaved (the machine is
shared: compare ratios within one round). ``--baseline DIR`` (an older checkout) runs its exporter's
passes too, next to ours, the order alternating from round to round.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import os
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.loadlab import (
    Cpu,
    Fleet,
    LogCounter,
    add_lab_arguments,
    announced_fleet,
    blackbox,
    builds,
    cpu_of,
    drive_blackbox,
    exporter_config,
    get_url,
    parse_metrics,
    per_broker,
    this_build,
    wait_for_log,
    work_directory,
)
from tests.lab.process import start_exporter_process, stop_process

#: the cores the lab and the probers share (2 here, as in the issue)
CORES = os.cpu_count() or 1
_RESULTS = (
    "mqtt_broker_probe_timestamp_seconds",
    "mqtt_broker_probe_duration_seconds",
    "mqtt_broker_probe_success",
)


@dataclass(frozen=True)
class SweepPass:
    """One first sweep: who ran it, its wall time, the client's and the brokers' CPU meanwhile."""

    label: str
    concurrency: str
    wall: float
    client: Cpu
    brokers_cpu: Cpu
    succeeded: int

    @property
    def floor(self) -> float:
        """What 2 shared cores need at best for this pass's work: (client + brokers) CPU / 2."""
        return (self.client.total + self.brokers_cpu.total) / CORES


def _brokers_cpu(lab: Fleet) -> Cpu:
    total = Cpu()
    for pid in lab.mosquitto_pids:
        cpu = cpu_of(pid)
        total = Cpu(total.user + cpu.user, total.system + cpu.system)
    return total


def _sum(cpus: Sequence[Cpu]) -> Cpu:
    return Cpu(sum(cpu.user for cpu in cpus), sum(cpu.system for cpu in cpus))


def exporters_pass(
    lab: Fleet,
    workdir: Path,
    label: str,
    shards: Sequence[str | None],
    *,
    concurrency: int,
    timeout: float,
    pythonpath: str = "",
) -> SweepPass:
    """Exporter processes started together (one per shard; None: the whole fleet) from the package on
    ``pythonpath`` (``loadlab.builds``); their first sweep."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "config.yaml"
    config.write_text(exporter_config(lab, 3600.0, timeout))  # no second probe during the measurement
    logs = [workdir / f"exporter-{index}.log" for index in range(len(shards))]

    def start(index: int) -> tuple[subprocess.Popen[bytes], str]:
        flags = [f"--probe.concurrency={concurrency}"]
        if shards[index] is not None:
            flags.append(f"--shard={shards[index]}")
        return start_exporter_process(config, logs[index], *flags, env={"PYTHONPATH": pythonpath}, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(len(shards)) as pool:
        started = list(pool.map(start, range(len(shards))))
    processes = [process for process, _ in started]
    try:
        for process, log in zip(processes, logs, strict=True):
            wait_for_log(log, process, b"msg=started", 60)
        client0 = [cpu_of(process.pid) for process in processes]
        brokers0 = _brokers_cpu(lab)
        counters = [LogCounter(log) for log in logs]
        deadline = time.monotonic() + 120 + len(lab.brokers) * (timeout / concurrency + 0.05)
        while sum(counter.poll() for counter in counters) < len(lab.brokers):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"first sweep incomplete: {sum(c.count for c in counters)}/{len(lab.brokers)}"
                )
            time.sleep(0.02)
        client = _sum([cpu_of(p.pid) - c for p, c in zip(processes, client0, strict=True)])
        brokers_cpu = _brokers_cpu(lab) - brokers0
        finished: dict[str, float] = {}
        starts: dict[str, float] = {}
        succeeded = 0
        for _, base in started:
            samples = parse_metrics(get_url(base + "/metrics").decode(), _RESULTS)
            done = per_broker(samples, _RESULTS[0])
            total = per_broker(samples, _RESULTS[1], phase="total")
            finished.update(done)
            starts.update({name: done[name] - total.get(name, 0.0) for name in done})
            succeeded += int(sum(per_broker(samples, "mqtt_broker_probe_success").values()))
        if len(finished) != len(lab.brokers):
            raise RuntimeError(f"{len(lab.brokers) - len(finished)} brokers have no result after the sweep")
    finally:
        for process in processes:
            stop_process(process)
    wall = max(finished.values()) - min(starts.values())
    return SweepPass(label, f"{concurrency} per process", wall, client, brokers_cpu, succeeded)


def blackbox_sweep(lab: Fleet, workdir: Path, *, concurrency: int | None, timeout: float) -> SweepPass:
    """blackbox_exporter probing every broker through /probe, ``concurrency`` at a time (None: no bound)."""
    targets = [broker.address for broker in lab.brokers]
    bound = concurrency or len(targets)
    with blackbox(workdir, lab.ca_file, timeout) as (base, pid):
        client0, brokers0 = cpu_of(pid), _brokers_cpu(lab)
        wall, succeeded, _ = asyncio.run(drive_blackbox(base, targets, "mqtt_tls", bound, timeout))
        client, brokers_cpu = cpu_of(pid) - client0, _brokers_cpu(lab) - brokers0
    label = "blackbox_exporter" if concurrency else "blackbox_exporter, no bound"
    return SweepPass(label, str(concurrency or "all at once"), wall, client, brokers_cpu, succeeded)


def run_passes(
    lab: Fleet, workdir: Path, *, concurrency: int, timeout: float, sides: Mapping[str, str] | None = None
) -> list[SweepPass]:
    """Every build's exporter (``sides``: name -> PYTHONPATH; this checkout's alone by default) as one
    process, then as two shards; then blackbox_exporter."""
    sides = sides or this_build()
    passes = [
        exporters_pass(
            lab,
            workdir / f"{name}-{len(shards)}",
            f"{name}, {'one process' if len(shards) == 1 else 'two shards'}",
            shards,
            concurrency=concurrency,
            timeout=timeout,
            pythonpath=pythonpath,
        )
        for shards in ([None], ["0/2", "1/2"])
        for name, pythonpath in sides.items()
    ]
    bounded = blackbox_sweep(lab, workdir / "blackbox", concurrency=concurrency, timeout=timeout)
    unbounded = blackbox_sweep(lab, workdir / "blackbox", concurrency=None, timeout=timeout)
    return [*passes, bounded, unbounded]


def sweep_table(passes: Sequence[SweepPass], brokers: int, timeout: float) -> list[str]:
    lines = [
        "| first sweep | concurrency | wall | / timeout | client CPU | brokers' CPU | floor on 2 cores | wall / floor | succeeded |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in passes:
        floor = max(p.floor, timeout)
        lines.append(
            f"| {p.label} | {p.concurrency} | {p.wall:.1f} s | **{p.wall / timeout:.2f}** | "
            f"{p.client.total:.1f} s ({p.client.total / brokers * 1000:.2f} ms/broker) | {p.brokers_cpu.total:.1f} s | "
            f"{floor:.1f} s ({floor / timeout:.2f}×) | {p.wall / floor:.2f} | {p.succeeded} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.firstsweep", description=__doc__.split("\n\n")[0])
    add_lab_arguments(parser, brokers=2000, concurrency=400)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--baseline", type=Path, help="an older checkout, its exporter side by side")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        directory = work_directory(stack, args.keep, "bench-firstsweep-")
        sides = stack.enter_context(builds(args.baseline))
        shares = (args.black_holes_share, args.expired_share)
        with announced_fleet(directory, args.brokers, *shares) as (lab, kinds):
            for round_ in range(args.rounds):
                order = dict(list(sides.items())[:: -1 if round_ % 2 else 1])
                passes = run_passes(
                    lab,
                    directory / f"round-{round_}",
                    concurrency=args.concurrency,
                    timeout=args.timeout,
                    sides=order,
                )
                print(f"\nround {round_ + 1}: {args.brokers} brokers, timeout {args.timeout:g} s, {kinds}")
                print("\n".join(sweep_table(passes, args.brokers, args.timeout)), flush=True)


if __name__ == "__main__":
    main()
