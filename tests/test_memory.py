"""Freed heap memory goes back to the operating system when the daemon trims."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from mqtt_cert_exporter import memory

SCRIPT = textwrap.dedent(
    """
    from mqtt_cert_exporter import memory

    def rss_kb():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))

    # Like probes between long-lived results: many freed blocks with a survivor every few pages.
    blocks = [bytes(4096) for _ in range(20000)]
    survivors = blocks[::16]
    del blocks
    before = rss_kb()
    assert memory.trim()
    print(before, rss_kb(), len(survivors))
    """
)


@pytest.mark.skipif(memory._malloc_trim() is None, reason="needs glibc's malloc_trim")  # noqa: SLF001 - whether glibc's malloc_trim is there
def test_trim_returns_freed_heap_pages() -> None:
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    before, after, _ = map(int, done.stdout.split())
    assert before - after > 40_000, f"RSS {before} kB -> {after} kB"
