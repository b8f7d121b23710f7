"""The benchmarks' load lab and the processes they measure: Mosquitto processes with many TLS listeners
and a share of black holes (``fleet``), blackbox_exporter driven through ``/probe``, our exporter's
configuration and log, the CPU of a process from /proc, and a fast reader of a text exposition.

Shared by ``bench.compare`` (the whole comparison) and ``bench.firstsweep`` (the first sweep on the cores).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from mqtt_cert_exporter.lab.mosquitto import Listener, Mosquitto
from mqtt_cert_exporter.lab.pki import Issued, Pki
from mqtt_cert_exporter.lab.ports import free_port, wait_for_port
from mqtt_cert_exporter.scheduler import grid_offset
from tests.lab.hostile import BlackHole
from tests.lab.process import stop_process

#: One Mosquitto process holds ~2000 TLS listeners with distinct certificates in ~60 MB.
LISTENERS_PER_MOSQUITTO = 2000


#: Black-hole brokers share this many ports (a full accept queue drops every SYN, whoever sends it).
MAX_BLACK_HOLE_PORTS = 64


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Cpu:
    """CPU seconds of a process: user and system (kernel: syscalls, the TCP stack)."""

    user: float = 0.0
    system: float = 0.0

    @property
    def total(self) -> float:
        return self.user + self.system

    def __sub__(self, other: Cpu) -> Cpu:
        return Cpu(self.user - other.user, self.system - other.system)


def cpu_of(pid: int) -> Cpu:
    """utime and stime of a process, from /proc/PID/stat (clock-tick resolution)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return Cpu(int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS)  # fields 14, 15 of proc(5)


def memory_mb(pid: int, key: str = "VmHWM") -> float:
    """VmHWM (peak RSS) or VmRSS of a process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def get_url(url: str, timeout: float = 60) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body: bytes = response.read()
        return body


@dataclass(frozen=True)
class BenchBroker:
    name: str
    address: str  # 127.0.0.1:PORT
    kind: str  # good, expired, untrusted, black_hole

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])


@dataclass
class Fleet:
    ca_file: Path
    brokers: list[BenchBroker]
    floor_port: int  # a good listener, for openssl s_time
    mosquitto_pids: list[int]
    build_seconds: float

    def count(self, kind: str) -> int:
        return sum(1 for broker in self.brokers if broker.kind == kind)


def plan_kinds(brokers: int, black_holes_share: float, expired_share: float, seed: int = 6) -> list[str]:
    """The kind of every broker, shuffled (stably) so each kind is spread over the config."""
    holes = round(brokers * black_holes_share)
    bad = round(brokers * expired_share)
    if holes + bad > brokers:
        raise ValueError("--black-holes-share + --expired-share must not exceed 1")
    kinds = ["black_hole"] * holes + ["expired"] * (bad - bad // 2) + ["untrusted"] * (bad // 2)
    kinds += ["good"] * (brokers - len(kinds))
    random.Random(seed).shuffle(kinds)
    if "good" not in kinds:
        raise ValueError("the fleet needs at least one good broker (the handshake floor runs against it)")
    return kinds


@contextlib.contextmanager
def fleet(directory: Path, brokers: int, black_holes_share: float, expired_share: float) -> Iterator[Fleet]:  # noqa: C901 - debt: the fleet's brokers, kinds and listeners in one generator
    started = time.monotonic()
    kinds = plan_kinds(brokers, black_holes_share, expired_share)
    now = dt.datetime.now(dt.UTC)
    pki = Pki(directory / "pki")
    root = pki.root("Bench Root")
    intermediate = pki.intermediate("Bench Intermediate", root)
    untrusted_root = pki.root("Untrusted Root")
    listeners: list[Listener] = []
    for index, kind in enumerate(kinds):
        name = f"broker-{index:05d}"
        leaf: Issued
        if kind == "good":  # expiry spread over a year, a few within days
            leaf = pki.leaf(name, intermediate, days=1 + (index * 37) % 400)
        elif kind == "expired":
            leaf = pki.leaf(name, intermediate, not_after=now - dt.timedelta(days=1 + index % 90))
        elif kind == "untrusted":
            leaf = pki.leaf(name, untrusted_root, days=30 + index % 300)
        else:
            continue
        chain = leaf.chain_path(intermediate) if kind != "untrusted" else leaf.cert_path
        listeners.append(Listener(name, cert=chain, key=leaf.key_path))
    processes: list[Mosquitto] = []
    holes: list[BlackHole] = []
    try:
        for start in range(0, len(listeners), LISTENERS_PER_MOSQUITTO):
            chunk = listeners[start : start + LISTENERS_PER_MOSQUITTO]
            mosquitto = Mosquitto(chunk, directory / f"mosquitto-{len(processes)}")
            mosquitto.start(timeout=120)
            processes.append(mosquitto)
        addresses: dict[str, str] = {}
        for mosquitto in processes:
            for listener in mosquitto._listeners:  # noqa: SLF001 - the lab's listener list, read by the benchmark only
                addresses[listener.name] = mosquitto.address(listener.name)
        holes = [BlackHole() for _ in range(min(kinds.count("black_hole"), MAX_BLACK_HOLE_PORTS))]
        entries: list[BenchBroker] = []
        for index, kind in enumerate(kinds):
            name = f"broker-{index:05d}"
            address = holes[index % len(holes)].address if kind == "black_hole" else addresses[name]
            entries.append(BenchBroker(name, address, kind))
        floor = next(entry for entry in entries if entry.kind == "good")
        yield Fleet(
            ca_file=root.cert_path,
            brokers=entries,
            floor_port=floor.port,
            mosquitto_pids=[mosquitto.pid for mosquitto in processes],
            build_seconds=time.monotonic() - started,
        )
    finally:
        for mosquitto in processes:
            mosquitto.stop()
        for hole in holes:
            hole.close()


def blackbox_binary() -> str:
    for candidate in ("prometheus-blackbox-exporter", "blackbox_exporter"):
        found = shutil.which(candidate)
        if found:
            return found
    if os.access("/usr/bin/prometheus-blackbox-exporter", os.X_OK):
        return "/usr/bin/prometheus-blackbox-exporter"
    raise RuntimeError("blackbox_exporter is not installed (Debian package prometheus-blackbox-exporter)")


BLACKBOX_MODULES = {
    "mqtt_tls": "the verifying module (tcp, tls: true, our CA and server name)",
    "mqtt_tls_insecure": "insecure_skip_verify: the second module needed to see a bad certificate's dates",
}


def blackbox_config(ca_file: Path, timeout: float) -> str:
    return f"""modules:
  mqtt_tls:
    prober: tcp
    timeout: {timeout:g}s
    tcp:
      tls: true
      tls_config:
        ca_file: '{ca_file}'
        server_name: localhost
  mqtt_tls_insecure:
    prober: tcp
    timeout: {timeout:g}s
    tcp:
      tls: true
      tls_config:
        insecure_skip_verify: true
"""


@dataclass(frozen=True)
class ProbeAnswer:
    """How a /probe answer says it succeeded and that it carries the certificate's expiry."""

    success: re.Pattern[bytes]
    expiry: bytes


BLACKBOX_ANSWER = ProbeAnswer(
    re.compile(rb"^probe_success (\S+)$", re.MULTILINE), b"\nprobe_ssl_earliest_cert_expiry "
)
#: our exporter's multi-target answer (``broker`` = the target)
OUR_ANSWER = ProbeAnswer(
    re.compile(rb"^mqtt_broker_probe_success\{[^}]*\} (\S+)$", re.MULTILINE),
    b"\nmqtt_broker_cert_expires_in_seconds{",
)


async def drive_blackbox(
    base: str,
    targets: Sequence[str],
    module: str,
    concurrency: int,
    timeout: float,
    interval: float | None = None,
    answer: ProbeAnswer = BLACKBOX_ANSWER,
) -> tuple[float, int, int]:
    """GET /probe for every target, at most ``concurrency`` at a time: all at once, or (``interval``) each
    at its offset on our exporter's grid (rounded to ticks: a tick's requests come together, unlike
    Prometheus's scrapes, ``bench.scraper``). (wall, succeeded, with expiry)
    ``answer``: the exporter's metric names (blackbox_exporter's, or ours in multi-target mode)."""
    slots = asyncio.Semaphore(concurrency)
    succeeded = with_expiry = 0
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=timeout + 30)
    ) as session:

        async def one(target: str, delay: float) -> None:
            nonlocal succeeded, with_expiry
            await asyncio.sleep(delay)
            async with slots, session.get(f"{base}/probe", params={"target": target, "module": module}) as r:
                body = await r.read()
            found = answer.success.search(body)
            succeeded += bool(found and float(found.group(1)) == 1.0)
            with_expiry += answer.expiry in body

        started = time.monotonic()
        await asyncio.gather(
            *(one(target, grid_offset(target, interval) if interval else 0.0) for target in targets)
        )
        return time.monotonic() - started, succeeded, with_expiry


@contextlib.contextmanager
def blackbox(workdir: Path, ca_file: Path, timeout: float) -> Iterator[tuple[str, int]]:
    """A running blackbox_exporter: (base URL, pid)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "blackbox.yml"
    config.write_text(blackbox_config(ca_file, timeout))
    binary = blackbox_binary()
    for _attempt in range(3):
        port = free_port()
        with open(workdir / "blackbox.log", "wb") as log:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for_port("127.0.0.1", port, timeout=15)
        except TimeoutError:
            stop_process(process)
            continue
        if process.poll() is None:
            break
    else:
        raise RuntimeError(f"blackbox_exporter did not start:\n{(workdir / 'blackbox.log').read_text()}")
    try:
        yield f"http://127.0.0.1:{port}", process.pid
    finally:
        stop_process(process)


Samples = dict[str, list[tuple[dict[str, str], float]]]


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str, names: Iterable[str]) -> Samples:
    """The samples of ``names`` in a text exposition (a fast subset of the format: ours is well formed)."""
    wanted = tuple(names)
    found: Samples = {name: [] for name in wanted}
    for line in text.splitlines():
        if not line.startswith(wanted):
            continue
        head, _, value = line.rpartition(" ")
        name, brace, labels = head.partition("{")
        if name in found:
            found[name].append((dict(_LABEL.findall(labels)) if brace else {}, float(value)))
    return found


def per_broker(samples: Samples, name: str, **labels: str) -> dict[str, float]:
    wanted = labels.items()
    return {
        found["broker"]: value
        for found, value in samples.get(name, [])
        if "broker" in found and wanted <= found.items()
    }


def scalar(samples: Samples, name: str) -> float:
    return next((value for labels, value in samples.get(name, []) if not labels), float("nan"))


def exporter_config(fleet: Fleet, interval: float, timeout: float) -> str:
    lines = [
        "defaults:",
        f"  interval: {interval:g}s",
        f"  timeout: {timeout:g}s",
        f"  tls: {{ca_file: '{fleet.ca_file}', server_name: localhost}}",
        "brokers:",
    ]
    lines += [f"  - {{name: {broker.name}, address: '{broker.address}'}}" for broker in fleet.brokers]
    return "\n".join(lines) + "\n"


class LogCounter:
    """Counts the 'broker probe succeeds/fails' lines (one per broker's first result) as they arrive."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._partial = b""
        self.count = 0

    def poll(self) -> int:
        with open(self._path, "rb") as log:
            log.seek(self._offset)
            data = self._partial + log.read()
            self._offset = log.tell()
        *lines, self._partial = data.split(b"\n")
        self.count += sum(1 for line in lines if b'msg="broker probe ' in line)
        return self.count


def wait_for_log(path: Path, process: subprocess.Popen[bytes], marker: bytes, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_bytes()
        for line in text.splitlines():
            if marker in line:
                return line.decode(errors="replace")
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"exporter did not log {marker!r}:\n{text.decode(errors='replace')[-3000:]}")
        time.sleep(0.01)


def work_directory(stack: contextlib.ExitStack, keep: str | None, prefix: str) -> Path:
    """``keep`` (created, and kept afterwards) when given, else a temporary directory removed with ``stack``."""
    if keep:
        directory = Path(keep)
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    return Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=prefix)))


@contextlib.contextmanager
def announced_fleet(
    directory: Path, brokers: int, black_holes_share: float, expired_share: float
) -> Iterator[tuple[Fleet, dict[str, int]]]:
    """``fleet``, saying on stdout what it holds: (the fleet, how many brokers of each kind)."""
    print(f"building the lab: {brokers} brokers ...", flush=True)
    with fleet(directory, brokers, black_holes_share, expired_share) as lab:
        kinds = dict(Counter(broker.kind for broker in lab.brokers))
        print(f"  {kinds} in {lab.build_seconds:.1f} s", flush=True)
        yield lab, kinds


def this_build() -> dict[str, str]:
    """This checkout's build by name ("ours") -> the PYTHONPATH that runs it."""
    return {"ours": os.environ.get("PYTHONPATH", "")}


@contextlib.contextmanager
def builds(baseline: Path | None) -> Iterator[dict[str, str]]:
    """The PYTHONPATH of each build to run side by side: this checkout's (``this_build``) and, with
    ``baseline`` (an older checkout), its ``exporter/`` as the package ("baseline", first)."""
    if baseline is None:
        yield this_build()
        return
    with tempfile.TemporaryDirectory() as packages:
        os.symlink(baseline.resolve() / "exporter", Path(packages) / "mqtt_cert_exporter")
        yield {"baseline": packages, **this_build()}


def add_lab_arguments(parser: argparse.ArgumentParser, *, brokers: int, concurrency: int) -> None:
    """The flags that shape the lab and the load: --brokers, the shares, --concurrency, --timeout; and
    --keep, where the lab is built (``work_directory``)."""
    parser.add_argument("--brokers", type=int, default=brokers)
    parser.add_argument("--black-holes-share", type=float, default=0.1)
    parser.add_argument("--expired-share", type=float, default=0.1, help="half expired, half untrusted")
    parser.add_argument("--concurrency", type=int, default=concurrency)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument(
        "--keep", metavar="DIR", help="work in DIR and keep it (the lab's configs, logs, profiles)"
    )
