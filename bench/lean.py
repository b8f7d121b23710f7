"""The lean prober: the Python floor of a whole probe, a third column next to ours and blackbox_exporter.

    python -m bench.lean --targets FILE --ca-file CA [--server-name localhost] [--concurrency 100]
                         [--timeout 5] [--interval SECONDS]

A deliberately minimal asyncio prober (on uvloop, the loop our exporter runs on): TCP, TLS through
``ssl.MemoryBIO`` with verification on and one cached context, MQTT 5 CONNECT -> CONNACK -> DISCONNECT,
the outcome and the leaf's notAfter kept in a dict. No chain analysis, no second connection for a bad
chain, no phases, no metrics text: what any asyncio prober on this ``ssl`` pays per probe. It runs with
the allocator setting our exporter starts itself with (``exporter/launch.py``), as a process of its own.

Every target (host:port, one a line) once: all at once, ``--concurrency`` at a time, or (``--interval``)
each at its own offset in the interval (the schedule grid of our exporter, as blackbox is driven).
Prints one JSON line: probes, wall seconds, its own CPU (user, system) while probing, outcome counts.
bench.compare runs it as a separate process, so its CPU is its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import uvloop

from mqtt_cert_exporter import launch
from mqtt_cert_exporter.scheduler import grid_offset

#: MQTT 5 CONNECT: protocol name, level 5, clean start, keep-alive 60 s, no properties, empty client id.
CONNECT = bytes([0x10, 13]) + b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + b"\x00\x00"
#: MQTT 5 DISCONNECT, normal disconnection.
DISCONNECT = b"\xe0\x00"


class _Connection(asyncio.Protocol):
    """One TCP connection whose bytes go through an SSLObject over two memory BIOs."""

    def __init__(self, context: ssl.SSLContext, server_name: str) -> None:
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname=server_name)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.lost = False
        self.fresh = False  # bytes arrived since the last wait

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.incoming.write(data)
        self.fresh = True
        self._wake()

    def eof_received(self) -> bool | None:
        self.incoming.write_eof()
        self.fresh = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def flush(self) -> None:
        data = self.outgoing.read()
        if data and self.transport is not None:
            self.transport.write(data)

    async def more(self) -> None:
        self.flush()
        if self.lost:
            raise ConnectionResetError("connection closed")
        if self.fresh:
            self.fresh = False
            return
        self.waiter = asyncio.get_running_loop().create_future()
        await self.waiter
        self.fresh = False


async def probe(context: ssl.SSLContext, target: str, server_name: str) -> dict[str, object]:
    host, _, port = target.rpartition(":")
    loop = asyncio.get_running_loop()
    transport, conn = await loop.create_connection(lambda: _Connection(context, server_name), host, int(port))
    try:
        while True:
            try:
                conn.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                await conn.more()
        cert = conn.tls.getpeercert()
        conn.tls.write(CONNECT)  # sent with the client's Finished
        conn.flush()
        data = b""
        while len(data) < 4:
            try:
                data += conn.tls.read(64)
            except ssl.SSLWantReadError:
                await conn.more()
        conn.tls.write(DISCONNECT)
        conn.flush()
        return {"success": data[0] == 0x20 and data[3] == 0, "not_after": (cert or {}).get("notAfter")}
    finally:
        transport.close()


async def run(
    targets: Sequence[str],
    ca_file: str,
    server_name: str,
    concurrency: int,
    timeout: float,
    interval: float | None,
) -> dict[str, object]:
    context = ssl.create_default_context(cafile=ca_file)  # one context for every probe
    slots = asyncio.Semaphore(concurrency)
    results: dict[str, dict[str, object]] = {}

    async def one(target: str, delay: float) -> None:
        await asyncio.sleep(delay)
        async with slots:
            try:
                async with asyncio.timeout(timeout):
                    results[target] = await probe(context, target, server_name)
            except ssl.SSLCertVerificationError:
                results[target] = {"success": False, "failure": "trust"}
            except TimeoutError:
                results[target] = {"success": False, "failure": "timeout"}
            except (OSError, ssl.SSLError):
                results[target] = {"success": False, "failure": "error"}

    before = os.times()
    started = time.monotonic()
    await asyncio.gather(
        *(one(target, grid_offset(target, interval) if interval else 0.0) for target in targets)
    )
    wall = time.monotonic() - started
    after = os.times()
    outcomes = Counter(
        "success" if result["success"] else str(result.get("failure", "refused"))
        for result in results.values()
    )
    return {
        "probes": len(targets),
        "wall": wall,
        "user": after.user - before.user,
        "system": after.system - before.system,
        "outcomes": dict(outcomes),
    }


# ------------------------------------------------------------------------------------------ for compare


@dataclass(frozen=True)
class LeanPass:
    mode: str  # "burst" or "steady", as BlackboxPass
    probes: int
    wall: float
    user: float
    system: float
    outcomes: dict[str, int]

    @property
    def cpu(self) -> float:
        return self.user + self.system

    @property
    def cpu_per_probe(self) -> float:
        return self.cpu / self.probes


def start_lean(
    targets: Sequence[str],
    ca_file: Path,
    workdir: Path,
    *,
    concurrency: int,
    timeout: float,
    interval: float | None = None,
) -> subprocess.Popen[str]:
    """The lean prober as a process of its own (its CPU is then only its own): ``finish_lean`` it."""
    workdir.mkdir(parents=True, exist_ok=True)
    listing = workdir / "lean-targets.txt"
    listing.write_text("\n".join(targets) + "\n")
    command = [sys.executable, "-m", "bench.lean", "--targets", str(listing), "--ca-file", str(ca_file)]
    command += ["--concurrency", str(concurrency), "--timeout", f"{timeout:g}"]
    if interval:
        command += ["--interval", f"{interval:g}"]
    root = Path(__file__).resolve().parent.parent
    # the allocator setting our exporter starts itself with (exporter/launch.py): the floor is then
    # what any asyncio prober pays in a process set up as ours is, not what glibc's default costs
    environment = launch.tuned_environment(os.environ, launch.glibc_version())
    return subprocess.Popen(
        command, cwd=root, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def finish_lean(process: subprocess.Popen[str], mode: str, limit: float) -> LeanPass:
    out, err = process.communicate(timeout=limit)
    if process.returncode != 0:
        raise RuntimeError(f"the lean prober failed:\n{err[-3000:]}")
    found = json.loads(out.strip().splitlines()[-1])
    return LeanPass(mode, found["probes"], found["wall"], found["user"], found["system"], found["outcomes"])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lean", description=__doc__.split("\n\n")[0])
    parser.add_argument("--targets", type=Path, required=True, help="host:port, one a line")
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--server-name", default="localhost")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--interval", type=float, default=None)
    args = parser.parse_args(argv)
    targets = [line.strip() for line in args.targets.read_text().splitlines() if line.strip()]
    found = uvloop.run(
        run(targets, args.ca_file, args.server_name, args.concurrency, args.timeout, args.interval)
    )
    print(json.dumps(found))


if __name__ == "__main__":
    main()
