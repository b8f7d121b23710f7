"""A steady-state probe of a good chain and of an expired one, ours against the lean prober, in process.

    python -m bench.chainkinds [--listeners 20] [--probes 2000] [--rounds 3]

For an expired or untrusted chain ours completes the handshake on a connection that verifies nothing and
asks for the MQTT answer (broker down or certificate bad); blackbox_exporter and the lean prober
(``bench/lean.py``) stop at the failed verification. This measures what that costs per probe, so a
fleet's share of bad chains can be read off bench.compare's steady-state ratio.

One Mosquitto with ``--listeners`` listeners of each kind (leaf + the lab's intermediate, EC P-256; the
expired leaves ended 10 days ago). Per kind and round: ``--probes`` probes one at a time by our prober
(warm: each chain judged before, as in steady state), then as many by the lean prober's probe; CPU from
``time.process_time``. Run it with the allocator setting the daemon starts with (``exporter/launch.py``):
``GLIBC_TUNABLES=glibc.malloc.tcache_count=1024``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ssl
import tempfile
import time
from pathlib import Path

from bench import lean
from mqtt_cert_exporter.config import BrokerConfig, Target, TlsSettings
from mqtt_cert_exporter.eventloop import run
from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Pki
from mqtt_cert_exporter.probe import Prober

KINDS = ("good", "expired")


async def _measure(mosquitto: Mosquitto, ca_file: Path, args: argparse.Namespace) -> None:
    tls = TlsSettings(ca_file=str(ca_file), server_name="localhost")
    context = ssl.create_default_context(cafile=str(ca_file))
    for kind in KINDS:
        brokers = [
            BrokerConfig(name=f"{kind}{i}", target=Target("127.0.0.1", mosquitto.port(f"{kind}{i}")), tls=tls)
            for i in range(args.listeners)
        ]
        prober = Prober()
        for broker in brokers:  # judged once, as before every steady-state probe
            await prober.probe(broker)
        for _ in range(args.rounds):
            started = time.process_time()
            for index in range(args.probes):
                await prober.probe(brokers[index % len(brokers)])
            ours = (time.process_time() - started) / args.probes
            started = time.process_time()
            for index in range(args.probes):
                target = f"127.0.0.1:{brokers[index % len(brokers)].target.port}"
                try:
                    await lean.probe(context, target, "localhost")
                except ssl.SSLCertVerificationError:
                    pass
            floor = (time.process_time() - started) / args.probes
            print(
                f"{kind}: ours {ours * 1000:.3f} ms, lean {floor * 1000:.3f} ms per probe ({ours / floor:.2f}x)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.chainkinds", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listeners", type=int, default=20, help="per kind")
    parser.add_argument("--probes", type=int, default=2000, help="per kind and round, for each prober")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        pki = Pki(directory / "pki")
        root = pki.root("Bench Root")
        intermediate = pki.intermediate("Bench Int", root)
        now = dt.datetime.now(dt.UTC)
        leaves = {
            "good": [pki.leaf(f"good-{i}", intermediate) for i in range(args.listeners)],
            "expired": [
                pki.leaf(
                    f"expired-{i}",
                    intermediate,
                    not_before=now - dt.timedelta(days=100),
                    not_after=now - dt.timedelta(days=10),
                )
                for i in range(args.listeners)
            ],
        }
        listeners = [
            Listener(f"{kind}{i}", cert=leaf.chain_path(intermediate), key=leaf.key_path)
            for kind in KINDS
            for i, leaf in enumerate(leaves[kind])
        ]
        mosquitto = Mosquitto(listeners, directory / "mosquitto")
        mosquitto.start(timeout=60)
        try:
            run(_measure(mosquitto, root.cert_path, args))
        finally:
            mosquitto.stop()


if __name__ == "__main__":
    main()
