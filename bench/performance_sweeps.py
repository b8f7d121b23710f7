"""The sections of docs/performance.md about every broker at once: the first contact taken apart (why ours
costs more than blackbox_exporter then), the first sweep on the cores (one process, two shards, blackbox)
and what the issue's 2x-the-timeout target asks. Pure: ``Results`` in, Markdown lines out.
"""

from __future__ import annotations

from bench.comparison import Results
from bench.figures import ms
from bench.firstsweep import CORES, sweep_table

#: ``python -m bench.firstcontact`` (6,000 brokers in process, three rounds of 1,000 per kind, concurrency
#: 128), 2026-12-04: CPU ms per broker, every broker at once, median (range)
FIRST_CONTACT_TABLE = (
    "| chains | ours, first sweep | ours, again | lean | first / lean | again / lean |",
    "|---|---|---|---|---|---|",
    "| good | 2.03 (2.03–2.30) | 1.58 (1.57–1.68) | 1.45 (1.35–1.51) | 1.40 | 1.09 |",
    "| bad (expired, untrusted) | 3.09 (2.90–3.13) | 1.52 (1.48–1.68) | 0.92 (0.86–0.94) | 3.36 | 1.66 |",
    "| this page's mix (80% good, 10% bad), per broker | 1.93 | 1.42 | 1.25 | 1.55 | 1.13 |",
)


def first_contact_lines(r: Results) -> list[str]:
    """Why every broker at once costs ours more than blackbox_exporter: the first contact, taken apart."""
    lean = r.lean_in("burst")
    if lean is None:
        return []
    burst = r.bb_burst.cpu_per_probe
    above = burst - lean.cpu_per_probe
    return [
        "### Every broker at once, taken apart",
        "",
        "The all-at-once figure is our first sweep, where every chain is new. `python -m bench.firstcontact` sweeps",
        "good chains and bad ones apart, all at once, in process: ours' first sweep, its second on the same",
        "prober (every chain known), and the lean prober (ours through the scheduler and the store, without the",
        "daemon's metrics text):",
        "",
        *FIRST_CONTACT_TABLE,
        "",
        "Every broker at once with its chain known costs ours 1.13× the lean prober; blackbox_exporter's burst "
        f"in this run cost {burst / lean.cpu_per_probe:.2f}× the lean prober's ({ms(burst)} against "
        f"{ms(lean.cpu_per_probe)}). What is above it is the first contact: OpenSSL verifies each new chain "
        "(as it does",
        "every time for blackbox and the lean prober; a known one ours only compares), ours reads the",
        "certificates and names the chain's problems (0.45 ms per good chain above its",
        "second sweep), and for a bad chain it opens the second connection that tells broker down from",
        "certificate bad (with that chain's longer analysis, 1.57 ms per bad chain above its second sweep, 0.16 ms",
        "per broker of this mix). With it a bad broker's first result already says whether the broker answers",
        "MQTT (`mqtt_broker_connect_success`), as every later one does (on one connection that verifies",
        "nothing). To cost no more than blackbox_exporter on a first sweep, all of that and ours' per-probe "
        + (
            f"bookkeeping would have to fit in the {ms(above)} blackbox spends above the lean prober, which the "
            "bad chains' second connections alone nearly fill."
            if above > 0
            else "bookkeeping would have to cost nothing: blackbox's burst cost no more than the lean prober's."
        ),
        "",
    ]


def cores_lines(r: Results) -> list[str]:
    """The first sweep on the cores (one process, two shards, blackbox, the lab's floor), and why --shard
    rather than worker processes."""
    ours, timeout = r.ours, r.args.timeout
    lines = ["## Using the cores: `--shard`", ""]
    if len(r.first_sweeps) >= 3:
        one, two, bounded = r.first_sweeps[:3]
        holes = r.kinds.get("black_hole", 0)
        lines += [
            f"The first sweep of {ours.brokers:,} brokers ({holes:,} black holes, timeout {timeout:g} s), each pass on "
            "fresh processes, side by side; the floor is what the 2 shared cores can do at best for that pass's work,",
            "(client CPU + brokers' CPU) / 2, and never less than one timeout while there are black holes:",
            "",
            *sweep_table(r.first_sweeps, ours.brokers, timeout),
            "",
            "A probe takes one of its `--probe.concurrency` slots only once TCP is connected (`exporter/admission.py`):",
            "black holes wait out their timeouts beside the slots, holding a connect permit (bounded by the open-file",
            "limit) and no CPU. The sweep is then bound by CPU, and one process is one event loop, at most one core:",
            f"ours spent {one.client.total:.1f} s of CPU ({one.client.total / timeout:.2f}× the timeout) in one "
            f"process, {two.client.total:.1f} s in two. Brokers are connected to in the configuration's order at the",
            "pace the slots free up (a connect still in progress after 1 s makes room for the next), so a healthy",
            "broker never waits long connected (brokers drop a connection that sends no ClientHello: RabbitMQ after",
            "5 s) and a black hole is known only when its connect does not complete: the black holes reached last",
            "time out up to one timeout after the CPU work is done. Two shards split that work over both cores: "
            f"{two.wall / timeout:.2f}× the timeout against {one.wall / timeout:.2f}× for one process; "
            f"blackbox_exporter took {bounded.wall / timeout:.2f}×",
            f"with {bounded.client.total / ours.brokers * 1000:.2f} ms of CPU per broker against our "
            f"{two.client.total / ours.brokers * 1000:.2f} ms (the first probe's extra work: every chain parsed once,",
            "the MQTT version learnt, a second connection per bad chain).",
            "`--probe.concurrency` now bounds the TLS and MQTT work alone: slots beyond what the CPU serves within",
            "the timeout only stretch every probe"
            + (
                f"; here {one.succeeded - two.succeeded:,} of the two shards' healthy probes ran into their deadline "
                f"at {r.args.concurrency} per process (the succeeded column)."
                if two.succeeded < one.succeeded
                else "."
            ),
            "",
            *two_timeouts_lines(r),
        ]
    lines += [
        "Worker processes (`--probe.workers N`) would do the same arithmetic on the same cores and add the",
        f"hand-off of every result to the process serving `/metrics`: pickling and unpickling one result costs "
        f"{ms(r.handoff)} here",
        f"({r.handoff / ours.steady_cpu_per_probe:.0%} of a steady-state probe), before any transport, on the "
        "process that also renders `/metrics`.",
        "Shards pay nothing per probe and each renders only its own brokers; their price is n scrape targets",
        "(one job listing them). So the design stays: on a 2-core machine run `--shard=0/2` and `--shard=1/2`",
        "(below); worker processes were not built.",
        "",
    ]
    return lines


#: How long brokers keep a TCP connection on their MQTT TLS listener that sends nothing (no ClientHello),
#: measured 2026-12-04 on Debian 12's packages (``python -m bench.idle``)
IDLE_BEFORE_CLIENT_HELLO = (
    "RabbitMQ 3.10 closes such a connection after 5.0 s (Mosquitto 2.0 and ejabberd 23.01 kept it 30 s; "
    "`python -m bench.idle`)"
)


def two_timeouts_lines(r: Results) -> list[str]:
    """What the issue's target of 2x the timeout for the first sweep asks, from the two shards' pass."""
    two, timeout, brokers = r.first_sweeps[1], r.args.timeout, r.ours.brokers
    unbounded = next((p for p in r.first_sweeps if p.concurrency == "all at once"), None)
    if two.floor <= timeout:
        return [
            f"Here the CPU work (the floor, {two.floor:.1f} s) fits in one timeout: the black holes bound the sweep, "
            "as any prober's.",
            "",
        ]
    bound = two.floor + timeout
    needed = (2 * timeout * CORES - two.brokers_cpu.total) / brokers * 1000
    lines = [
        "**What 2× the timeout asks.** A black hole is known only one timeout after its connect began, and",
        "brokers are connected to as the CPU frees, so the black holes reached last start when the CPU work is",
        f"nearly done: such a sweep ends about one timeout after its floor, {bound:.1f} s "
        f"({bound / timeout:.2f}×) for the two shards, which took {two.wall:.1f} s. Within 2× needs two things",
        f"at once: the floor itself within 2× (here {two.floor / timeout:.2f}×: with these brokers' CPU, ours "
        f"would have to spend at most {needed:.2f} ms per broker, against {two.client.total / brokers * 1000:.2f}),",
        "and every connection opened so far ahead that the last black hole starts one timeout before the CPU",
        f"work ends: healthy brokers would then wait connected, sending nothing, up to {two.floor - timeout:.1f} s "
        "(the floor less one",
        f"timeout) before their ClientHello. {IDLE_BEFORE_CLIENT_HELLO}, so such a",
        "prober turns a busy first sweep into handshake failures of its own making.",
    ]
    if unbounded is not None:
        healthy = r.kinds.get("good", 0)
        lines[-1] += (
            f" blackbox_exporter with no bound opens every connection at once: {unbounded.wall / timeout:.2f}×, "
            f"and {healthy - unbounded.succeeded:,} of the {healthy:,} healthy brokers failed."
        )
    return [*lines, ""]
