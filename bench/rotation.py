"""Memory while every broker rotates its certificate on every connection (issue 18.13: ~7.8 MB/min for
10 minutes, bounded only by 65,536 entries per certificate cache).

    python -m bench.rotation [--brokers 60] [--interval 1s] [--minutes 5] [--every 30]

A real exporter process probes ``--brokers`` names of one TLS server that presents a new leaf on every
connection (tests/lab/hostile.py ``rotating_certificates``). Every ``--every`` seconds it prints the
exporter's RSS and what its certificate caches hold (``mqtt_cert_exporter_cache_entries`` / ``_bytes``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from mqtt_cert_exporter.lab.pki import Pki
from tests.lab.hostile import rotating_broker
from tests.lab.process import start_exporter_process, stop_process

ROOT = Path(__file__).resolve().parent.parent
CACHES = ("certificates", "signatures", "verdicts")


def sample(base: str) -> dict[str, float]:
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            cache = metric.labels.get("cache")
            if cache in CACHES:
                values[f"{metric.name.rsplit('_', 1)[-1]}:{cache}"] = metric.value
            elif metric.name == "process_resident_memory_bytes":
                values["rss"] = metric.value
            elif metric.name == "mqtt_broker_probe_success":
                values["probes_ok"] = values.get("probes_ok", 0.0) + metric.value
    return values


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--brokers", type=int, default=60)
    parser.add_argument("--interval", default="1s")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--every", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pki = Pki(directory / "pki")
        root = pki.root("Rotation Root")
        intermediate = pki.intermediate("Rotation Intermediate", root)
        rotating = rotating_broker(
            directory / "leaves",
            intermediate,
            intermediate.cert_path,
            ca_file=root.cert_path,
            connack=b"\x20\x02\x00\x00",
        )
        with rotating as broker:
            config = directory / "config.yaml"
            lines = [f"defaults: {{interval: {args.interval}, timeout: 1s}}", "brokers:"]
            for i in range(args.brokers):
                lines.append(
                    f"  - {{name: rot{i}, address: '{broker.address}', "
                    f"tls: {{ca_file: '{root.cert_path}', server_name: localhost}}}}"
                )
            config.write_text("\n".join(lines) + "\n")
            process, base = start_exporter_process(config, directory / "exporter.log", cwd=ROOT)
            started = time.monotonic()
            print(
                f"{args.brokers} brokers rotating their certificate on every connection, interval {args.interval}"
            )
            try:
                while (elapsed := time.monotonic() - started) < args.minutes * 60:
                    time.sleep(min(args.every, args.minutes * 60 - elapsed))
                    values = sample(base)
                    caches = ", ".join(
                        f"{cache} {values.get(f'entries:{cache}', 0):.0f} ({values.get(f'bytes:{cache}', 0) / 2**20:.1f} MiB)"
                        for cache in CACHES
                    )
                    print(
                        f"{time.monotonic() - started:5.0f} s  RSS {values.get('rss', 0) / 2**20:6.1f} MB  {caches}",
                        flush=True,
                    )
            finally:
                stop_process(process)


if __name__ == "__main__":
    main()
