"""A short soak (the long one is `python -m bench.soak`): no growth in fds, tasks or memory after
warm-up while misbehaving brokers are probed and /metrics is scraped concurrently."""

from __future__ import annotations

import pytest

from bench.soak import run_soak

pytestmark = pytest.mark.slow


def test_short_soak_has_no_leaks() -> None:
    report = run_soak(brokers=80, seconds=25, interval="2s", timeout="1s", warmup=8)
    print("\n".join(report.lines()))
    assert report.failed_probes > 100  # the misbehaving quarter really was probed, many times
    assert report.at_end.fds <= report.after_warmup.fds + 10
    assert report.at_end.tasks <= report.after_warmup.tasks + 5
    assert report.at_end.rss_mb <= report.after_warmup.rss_mb * 1.15 + 5
    # how long scrapes took is a timing: bench.soak reports it (docs/reliability.md), not this test
