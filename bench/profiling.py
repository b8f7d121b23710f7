"""Where a running process spends its CPU: py-spy's GIL-holding samples summarized by what the code does
(``summarize_profile``), perf's samples by shared object, i.e. by layer (``perf_layers``), both taken at
once (``profile_process``).
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROFILE_RATE = 1000


@dataclass(frozen=True)
class Profile:
    samples: int
    seconds: float
    rate: int
    categories: list[tuple[str, float]]  # (what, share of samples)
    self_top: list[tuple[str, float]]  # (function (file), share): where the sample was taken
    inclusive_top: list[tuple[str, float]]  # exporter functions, share of samples under them

    @property
    def busy(self) -> float:
        """Share of the wall time the sampled thread held the GIL."""
        return self.samples / (self.seconds * self.rate) if self.seconds else float("nan")


#: Leaf to root, the first frame that matches names the category of a sample.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("ssl: `_msg_callback` wrapper (enum conversions per TLS message)", ("_msg_callback",)),
    ("ssl: SSLObject calls (the GIL-holding part of handshakes and records)", ("(ssl.py:",)),
    ("logging", ("/logging/", "exporter/logs.py")),
    (
        "HTTP and /metrics rendering (aiohttp, prometheus_client, collector)",
        ("prometheus_client", "collector.py", "aiohttp"),
    ),
    ("legacy TLS 1.0/1.1 check", ("probe/lifecycle/legacy.py",)),
    (
        "certificate analysis (chain, trust verdict, lints, lifecycle, files)",
        (
            "exporter/certs/",
            "probe/lifecycle/checks.py",
            "cryptography",
        ),
    ),
    ("MQTT CONNECT/CONNACK codec", ("probe/wire/mqtt.py",)),
    ("probe and TLS session code (phases, deadlines, results)", ("exporter/probe/", "results.py")),
    ("scheduler", ("exporter/scheduler.py", "exporter/store.py")),
    ("asyncio: event loop, streams, transports, timeouts", ("asyncio/", "selectors.py", "socket.py")),
    ("the lean prober's own code", ("bench/lean.py",)),
]


def _frame_key(frame: str) -> str:
    """'handshake (/x/exporter/probe/tls.py:123)' -> 'handshake (exporter/probe/tls.py)'"""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    if "/site-packages/" in path:
        path = path.split("/site-packages/", 1)[1]
    elif "/lib/python3" in path:
        path = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    elif path.startswith(str(ROOT)):
        path = os.path.relpath(path, ROOT)
    return f"{name} ({path})"


def summarize_profile(raw: str, seconds: float, rate: int, top: int = 12) -> Profile:
    """Summarize py-spy's raw (collapsed-stack) output."""
    total = 0
    category: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        self_time[_frame_key(frames[-1])] += count
        for key in {_frame_key(frame) for frame in frames if "exporter/" in frame}:
            inclusive[key] += count
        for frame in reversed(frames):
            what = next((label for label, marks in CATEGORIES if any(mark in frame for mark in marks)), None)
            if what is not None:
                category[what] += count
                break
        else:
            category["other"] += count
    if not total:
        return Profile(0, seconds, rate, [], [], [])

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(key, count / total) for key, count in counter.most_common(n)]

    return Profile(
        total, seconds, rate, shares(category, len(category)), shares(self_time, top), shares(inclusive, top)
    )


#: perf's shared objects -> the layer they stand for
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("OpenSSL (libcrypto, libssl): the TLS handshakes and records", ("libcrypto", "libssl")),
    ("Python interpreter (libpython)", ("libpython", "python3")),
    ("C library (malloc/free, memcpy: mostly for the interpreter)", ("libc.so", "libc-")),
    ("kernel (syscalls, TCP/IP over loopback)", ("[kernel", "[vdso]")),
    ("cryptography's Rust core (certificate parsing)", ("_rust",)),
]
_PERF_LINE = re.compile(r"^\s*([\d.]+)%\s+(\S.*?)\s*$")


def perf_layers(report: str) -> list[tuple[str, float]]:
    """``perf report --sort dso`` -> [(layer, share)], largest first."""
    shares: dict[str, float] = {}
    for line in report.splitlines():
        found = _PERF_LINE.match(line)
        if found is None or line.lstrip().startswith("#"):
            continue
        dso = found.group(2)
        layer = next((name for name, marks in LAYERS if any(mark in dso for mark in marks)), None)
        key = layer or "other extension modules"
        shares[key] = shares.get(key, 0.0) + float(found.group(1)) / 100
    return sorted(shares.items(), key=lambda item: -item[1])


def profile_process(
    pid: int, workdir: Path, seconds: float
) -> tuple[Profile | None, list[tuple[str, float]]]:
    """py-spy (GIL-holding samples: the Python side) and, when installed, perf (every CPU cycle, by
    shared object: OpenSSL vs interpreter vs kernel) of a running process, at the same time."""
    duration = str(math.ceil(seconds))
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    perf = shutil.which("perf")
    raw, perf_data = workdir / "py-spy.txt", workdir / "perf.data"
    runs: list[subprocess.Popen[bytes]] = []
    if os.access(py_spy, os.X_OK):
        command = [py_spy, "record", "--pid", str(pid), "--duration", duration, "--rate", str(PROFILE_RATE)]
        command += ["--gil", "--nonblocking", "--format", "raw", "--output", str(raw)]
        runs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    else:
        print("py-spy not found (pip install py-spy): no Python profile", file=sys.stderr)
    if perf:
        command = [perf, "record", "-F", "499", "-p", str(pid), "-o", str(perf_data), "--", "sleep", duration]
        runs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for run in runs:
        try:
            run.wait(seconds + 60)
        except subprocess.TimeoutExpired:
            run.kill()
            run.wait()
    profile = None
    if raw.exists() and raw.stat().st_size:
        profile = summarize_profile(raw.read_text(), seconds, PROFILE_RATE)
    elif runs and os.access(py_spy, os.X_OK):
        print("py-spy failed (it needs ptrace: root or CAP_SYS_PTRACE)", file=sys.stderr)
    layers: list[tuple[str, float]] = []
    if perf and perf_data.exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(
                [perf, "report", "-i", str(perf_data), "--sort", "dso", "--stdio"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            layers = perf_layers(result.stdout)
    return profile, layers
