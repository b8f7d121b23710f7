"""The figures of one comparison, as tables and lines: ours against blackbox_exporter, the lean prober and
the floor (``figures_table``), the issue's targets met or not (``targets_lines``), the capacity of one
process and of a machine (``capacity``), and the console summary (``report``). Pure: ``Results`` in,
text out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.comparison import Results
from bench.lean import LeanPass
from bench.loadlab import Cpu
from bench.passes import RENDER_SECONDS, SCRAPES
from mqtt_cert_exporter.collector import ChainDetail

#: Planning figures for the capacity section (the issue's target fleet).
FLEET_INTERVAL = 60.0
FLEET_CORES = 2
FLEET_TIMEOUT = 10.0
FLEET_HOLES_SHARE = 0.1
#: An HA pair of Prometheus servers, each scraping every FLEET_INTERVAL.
SCRAPES_PER_INTERVAL = 2
#: Keep one exporter's event loop (one core at most) this busy at most: scrapes, reloads, bursts.
UTILIZATION = 0.7


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def cpu_split(cpu: Cpu, probes: int) -> str:
    return f"user {cpu.user / probes * 1000:.2f} + system {cpu.system / probes * 1000:.2f} ms"


def lean_cells(ours: float, lean: LeanPass | None) -> tuple[str, str]:
    """The lean prober's CPU per probe and ours / it, or empty cells."""
    if lean is None:
        return "", ""
    return ms(lean.cpu_per_probe), f"{ours / lean.cpu_per_probe:.2f}"


def figures_table(r: Results) -> list[str]:
    ours, steady, burst, insecure = r.ours, r.bb_steady, r.bb_burst, r.bb_insecure
    lean_steady, lean_burst = r.lean_in("steady"), r.lean_in("burst")
    timeout = r.args.timeout
    ours_steady = ours.steady_cpu_per_probe
    floors = ", ".join(ms(f.cpu_per_handshake) for f in r.floors)
    rows = [
        (
            "**CPU per probe, steady state**",
            ms(ours_steady),
            ms(steady.cpu_per_probe),
            f"**{ours_steady / steady.cpu_per_probe:.2f}**",
            f"every broker once in a {ours.interval:g} s interval (blackbox: scraped by a real Prometheus, "
            "one target per broker, each at the offset Prometheus gives it, as users run it; its passes right "
            f"before and right after ours pooled: {', '.join(ms(p.cpu_per_probe) for p in r.bb_steady_passes)}). "
            "Target: at most 1",
        ),
        grid_row(r),
        (
            "CPU split, steady state",
            cpu_split(ours.steady_cpu, ours.steady_probes),
            cpu_split(steady.cpu, steady.probes),
            "",
            "system = syscalls and the TCP stack",
        ),
        (
            "CPU per probe, all brokers at once",
            ms(ours.sweep_cpu_per_probe),
            ms(burst.cpu_per_probe),
            f"{ours.sweep_cpu_per_probe / burst.cpu_per_probe:.2f}",
            f"concurrency {r.args.concurrency}; ours: its first sweep, which also parses every chain once, "
            "names its trust problems and, for a bad chain, makes a second, non-verifying connection",
        ),
        (
            "CPU per broker to see bad certificates' dates",
            ms(ours_steady),
            ms(steady.cpu_per_probe + insecure.cpu_per_probe),
            f"{ours_steady / (steady.cpu_per_probe + insecure.cpu_per_probe):.2f}",
            f"blackbox needs its second, insecure module per broker ({ms(insecure.cpu_per_probe)} per "
            "probe, all at once)",
        ),
        (
            "**… / `openssl s_time -new` floor**",
            f"**{ours_steady / r.floor:.2f}**",
            f"{steady.cpu_per_probe / r.floor:.2f}",
            "",
            f"floor: client CPU per full handshake, {floors} (measured before and after); target: ours "
            "within 2",
        ),
        (
            "**first sweep wall time / timeout**",
            f"**{ours.sweep_wall / timeout:.2f}**",
            f"{burst.wall / timeout:.2f}",
            "",
            f"{ours.sweep_wall:.1f} s and {burst.wall:.1f} s for {ours.brokers} brokers, timeout {timeout:g} s, "
            f"concurrency {r.args.concurrency}",
        ),
        (
            "schedule lag, max",
            f"{ours.max_lag * 1000:.0f} ms",
            "",
            "",
            "`mqtt_cert_exporter_schedule_lag_max_seconds` (a scrape blocks the event loop too); "
            f"{ours.steady_finished}/{ours.brokers} results "
            "renewed in the measured interval (black holes started near its end finish after it)",
        ),
        (
            "peak RSS",
            f"{ours.peak_rss:.0f} MB",
            f"{r.blackbox_rss:.0f} MB",
            f"{ours.peak_rss / r.blackbox_rss:.1f}",
            f"ours: {ours.start_rss:.0f} MB at start, {ours.steady_rss:.0f} MB in steady state",
        ),
    ]
    scrape = ours.scrape
    if scrape is not None:
        upper = " (probes were due meanwhile: upper bounds)" if scrape.probing else ""
        rows += [
            (
                f"**/metrics with {ours.brokers} brokers, every result new**",
                f"**{scrape.cold_wall * 1000:.0f} ms**",
                "",
                "",
                f"a scrape one steady interval after the previous one (every result renewed meanwhile, each "
                f"formatted when published), as the scraper waited for it while probing went on; the "
                f"exporter rendered it in **{scrape.cold_render * 1000:.0f} ms** (`{RENDER_SECONDS}`), the "
                f"event loop blocked meanwhile; {scrape.cold_cpu * 1000:.0f} ms exporter CPU, probes included. "
                f"{scrape.bytes / 2**20:.1f} MiB, {scrape.series} series",
            ),
            (
                f"/metrics with {ours.brokers} brokers, the first scrape",
                f"{scrape.first_wall * 1000:.0f} ms",
                "",
                "",
                f"the first scrape of the process, right after the first sweep: {scrape.first_cpu * 1000:.0f} ms "
                "CPU; one-time costs (first touch of the response buffers; the configuration's own text is "
                "formatted when it is applied)",
            ),
            (
                f"/metrics with {ours.brokers} brokers, nothing changed",
                f"{scrape.warm_wall * 1000:.0f} ms",
                "",
                "",
                f"median of {SCRAPES} scrapes right after (cached text); {scrape.warm_cpu * 1000:.0f} ms CPU"
                + upper,
            ),
        ]
    lean_column = {
        0: lean_cells(ours_steady, lean_steady),
        2: (lean_split(lean_steady), ""),
        3: lean_cells(ours.sweep_cpu_per_probe, lean_burst),
        5: (f"{lean_steady.cpu_per_probe / r.floor:.2f}" if lean_steady else "", ""),
    }
    lines = [
        "| figure | ours | lean | blackbox_exporter | ours / lean | ours / blackbox | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, (figure, ours_cell, bb_cell, bb_ratio, note) in enumerate(rows):
        lean_cell, lean_ratio = lean_column.get(index, ("", ""))
        cells = (figure, ours_cell, lean_cell, bb_cell, lean_ratio, bb_ratio, note)
        lines.append(f"| {' | '.join(cells)} |")
    return lines


def grid_row(r: Results) -> tuple[str, str, str, str, str]:
    """Ours against blackbox driven on our grid: the batching our scheduler does, given to blackbox too."""
    grid, ours = r.bb_grid, r.ours.steady_cpu_per_probe
    if grid is None:
        return ("… blackbox on our grid", "", "not measured", "", "")
    return (
        "… blackbox on our grid",
        ms(ours),
        ms(grid.cpu_per_probe),
        f"{ours / grid.cpu_per_probe:.2f}",
        "blackbox driven by an HTTP client on our exporter's grid: offsets rounded to ticks, so the requests "
        "of a tick arrive together as our probes start together (the lean prober runs on it too). No "
        "Prometheus batches its scrapes so: the best case for blackbox",
    )


def lean_split(lean: LeanPass | None) -> str:
    if lean is None:
        return ""
    return f"user {lean.user / lean.probes * 1000:.2f} + system {lean.system / lean.probes * 1000:.2f} ms"


@dataclass(frozen=True)
class Capacity:
    per_process: int  # probes and scrapes within UTILIZATION of one core
    per_process_without_scrapes: int
    machine: int
    slots: float  # probes past their TCP connect, on average (both shards)
    connects: float  # black holes' connects in progress, on average (both shards)
    concurrency: int
    rss: float  # one process at per_process brokers
    scrape_block: float  # seconds one scrape with every result new blocks the loop at per_process brokers
    scrape_cpu_per_broker: float  # exporter CPU seconds per broker and interval for the scrapes
    cold_10k: float  # /metrics at 10,000 brokers, every result new
    render_10k: float  # ... its rendering, as the exporter measured it
    warm_10k: float  # ... nothing changed
    rss_10k: float  # both shards together at 10,000 brokers


def capacity(r: Results) -> Capacity:
    """Brokers at a 60 s interval on 2 cores with 10% black holes, from the measured figures.

    Scrapes: an HA pair each scraping once per interval; the first of them finds every result new
    (each broker's text formatted once), the second finds it cached.
    """
    ours = r.ours
    per_probe = ours.steady_cpu_per_probe
    cold_wall = cold_cpu = warm_wall = warm_cpu = 0.0
    if ours.scrape is not None:
        cold_wall, cold_cpu = ours.scrape.cold_wall / ours.brokers, ours.scrape.cold_cpu / ours.brokers
        warm_wall, warm_cpu = ours.scrape.warm_wall / ours.brokers, ours.scrape.warm_cpu / ours.brokers
    scrape_cpu = cold_cpu + (SCRAPES_PER_INTERVAL - 1) * warm_cpu
    budget = UTILIZATION * FLEET_INTERVAL
    per_process = int(budget / (per_probe + scrape_cpu)) // 100 * 100
    machine = per_process * FLEET_CORES  # one event loop uses at most one core: --shard=0/2 and 1/2
    rate = machine / FLEET_INTERVAL
    # a probe holds a slot only once TCP is connected (exporter.admission): black holes hold connect permits
    slots = rate * (1 - FLEET_HOLES_SHARE) * ours.mean_live_duration
    per_broker_mb = max(0.0, ours.steady_rss - ours.start_rss) / ours.brokers
    return Capacity(
        per_process=per_process,
        per_process_without_scrapes=int(budget / per_probe) // 100 * 100,
        machine=machine,
        slots=slots,
        connects=rate * FLEET_HOLES_SHARE * FLEET_TIMEOUT,
        concurrency=int(math.ceil(2 * slots / FLEET_CORES / 10) * 10),
        rss=ours.start_rss + per_broker_mb * per_process,
        scrape_block=cold_wall * per_process,
        scrape_cpu_per_broker=scrape_cpu,
        cold_10k=cold_wall * 10_000,
        render_10k=(ours.scrape.cold_render / ours.brokers if ours.scrape else 0.0) * 10_000,
        warm_10k=warm_wall * 10_000,
        rss_10k=FLEET_CORES * ours.start_rss + per_broker_mb * 10_000,
    )


def targets_lines(r: Results) -> list[str]:
    """The issue's targets, met or not, from this run."""
    ours, cap = r.ours, capacity(r)
    ratio = ours.steady_cpu_per_probe / r.bb_steady.cpu_per_probe
    floor = ours.steady_cpu_per_probe / r.floor
    grid = r.bb_grid
    grid_ratio = (
        f"; {ours.steady_cpu_per_probe / grid.cpu_per_probe:.2f}× against blackbox on our grid, its best case"
        if grid
        else ""
    )

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    how = "measured" if ours.brokers >= 10_000 else f"extrapolated linearly from {ours.brokers} brokers"
    return [
        "| target | this run | |",
        "|---|---|---|",
        f"| CPU per probe at most blackbox_exporter's (steady state) | {ratio:.2f}× (blackbox scraped by "
        f"Prometheus, as users run it){grid_ratio} | {verdict(ratio <= 1)} |",
        all_at_once_target(r),
        f"| within 2× of the `openssl s_time` floor | {floor:.2f}× | {verdict(floor <= 2)} |",
        f"| 10,000 brokers, {FLEET_INTERVAL:g} s, {FLEET_HOLES_SHARE:.0%} black holes, {FLEET_CORES} cores "
        f"| ~{cap.machine:,} brokers, two processes with `--shard` | {verdict(cap.machine >= 10_000)} |",
        (
            f"| … under 250 MB RSS | one process probing all {ours.brokers:,}: {ours.steady_rss:.0f} MB in "
            f"steady state, {ours.peak_rss:.0f} MB at the peak (the first sweep, every broker at once) "
            f"| {verdict(ours.steady_rss < 250)} |"
            if ours.brokers >= 10_000
            else f"| … under 250 MB RSS | ~{cap.rss_10k:.0f} MB for both processes together ({how}: an upper "
            f"bound, part of the growth is per probe in flight) | {verdict(cap.rss_10k < 250)} |"
        ),
        f"| `/metrics` for 10,000 brokers under 250 ms | rendered in ~{cap.render_10k * 1000:,.0f} ms when every "
        f"result is new (the scraper waited ~{cap.cold_10k * 1000:,.0f} ms while probing went on), "
        f"~{cap.warm_10k * 1000:,.0f} ms when none is ({how}) | {verdict(cap.render_10k < 0.25)} |",
        *(
            f"| … gzip when asked, body measured | {t.gzip_bytes / 2**20:.2f} MiB gzip of {t.bytes / 2**20:.1f} MiB, "
            f"rendered in {t.render * 1000:.0f} ms (`bench.format`, default `--metrics.chain`) "
            f"| {verdict(t.render < 0.25)} |"
            for t in r.texts
            if t.chain is ChainDetail.LEAF_EARLIEST and not t.root_sent
        ),
        first_sweep_target(r),
    ]


def all_at_once_target(r: Results) -> str:
    """Ours when every broker is probed at once is its first sweep: each chain parsed and analysed once,
    and a second connection for a bad chain. Blackbox tells the same only with its second module."""
    ours, burst, insecure = r.ours.sweep_cpu_per_probe, r.bb_burst.cpu_per_probe, r.bb_insecure.cpu_per_probe
    return (
        f"| … every broker at once | {ours / burst:.2f}× (our first sweep against its verifying module; "
        f"{ours / (burst + insecure):.2f}× against both modules, what blackbox needs to tell a bad "
        "certificate's dates; every chain already known, ours costs about what blackbox does: see Every broker "
        f"at once, taken apart) | {'met' if ours <= burst else '**not met**'} |"
    )


def first_sweep_target(r: Results) -> str:
    timeout, ours = r.args.timeout, r.ours
    if ours.brokers < 10_000:
        return "| first sweep of 10,000 brokers at most 2× the timeout | not measured (run with --brokers 10000) | |"
    wall = ours.sweep_wall
    how = f"{wall / timeout:.2f}× with one process (concurrency {r.args.concurrency})"
    if len(r.first_sweeps) >= 2:
        wall = r.first_sweeps[1].wall
        floor = r.first_sweeps[1].floor / timeout
        how = (
            f"{wall / timeout:.2f}× with two shards, {ours.sweep_wall / timeout:.2f}× with one process (concurrency "
            f"{r.args.concurrency}): about the two shards' floor ({floor:.2f}×) plus one timeout, the black holes "
            "reached last (see Using the cores)"
        )
    return (
        f"| first sweep of 10,000 brokers, 10% black holes, at most 2× the timeout on 2 cores | {how} "
        f"| {'met' if wall / timeout <= 2 else '**not met**'} |"
    )


def report(r: Results) -> str:
    """The console summary."""
    ours = r.ours
    cap = capacity(r)
    lines = [
        f"machine: {r.machine.cores} cores, {r.machine.cpu_model}, {r.machine.python}",
        f"fleet: {ours.brokers} brokers {r.kinds}, built in {r.fleet_build:.1f} s",
        "",
        *figures_table(r),
        "",
        "our exporter saw: " + ", ".join(f"{k} {v}" for k, v in ours.outcomes.items()),
        "blackbox saw: "
        + "; ".join(
            f"{p.module} ({p.mode}) success {p.succeeded}, expiry seen {p.with_expiry}" for p in r.blackbox
        ),
        "lean saw: " + "; ".join(f"({p.mode}) {p.outcomes}" for p in r.lean),
        "",
        *targets_lines(r),
        "",
        f"capacity at {FLEET_INTERVAL:g} s, {FLEET_HOLES_SHARE:.0%} black holes, {FLEET_TIMEOUT:g} s timeout: "
        f"~{cap.per_process} brokers per exporter process ({cap.per_process_without_scrapes} if scrapes "
        f"were free), ~{cap.machine} on {FLEET_CORES} cores with --shard; ~{cap.slots:.0f} probes in slots "
        f"(--probe.concurrency={cap.concurrency} per shard) and ~{cap.connects:.0f} black holes connecting",
    ]
    if ours.layers:
        lines += ["", "CPU by layer (perf):"]
        lines += [f"  {share * 100:5.1f}%  {what}" for what, share in ours.layers]
    if ours.profile is not None:
        lines += ["", f"Python side (py-spy --gil, {ours.profile.samples} samples):"]
        lines += [f"  {share * 100:5.1f}%  {what}" for what, share in ours.profile.categories]
        lines += ["  top functions (own time):"]
        lines += [f"  {share * 100:5.1f}%  {what}" for what, share in ours.profile.self_top[:10]]
    lines.append(f"\nbench took {r.seconds:.0f} s")
    return "\n".join(lines)
