"""What one comparison found: the machine it ran on (``Machine``) and every pass (``Results``), with the
few figures derived from them that the report and the page share.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import ssl
import statistics
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.firstsweep import SweepPass
from bench.format import FleetText
from bench.lean import LeanPass
from bench.loadlab import Cpu, blackbox_binary
from bench.passes import BlackboxPass, ExporterRun, Floor
from bench.profiling import Profile
from mqtt_cert_exporter.lab.mosquitto import mosquitto_binary


@dataclass
class Machine:
    cores: int
    cpu_model: str
    memory: str
    kernel: str
    python: str
    openssl: str
    mosquitto: str
    blackbox: str

    @classmethod
    def describe(cls) -> Machine:
        def first_line(command: list[str]) -> str:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
                for line in (result.stdout + result.stderr).splitlines():
                    if line.strip():
                        return line.strip()
            return "unknown"

        model = "unknown"
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory = "unknown"
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
        mosquitto = mosquitto_binary()
        return cls(
            cores=os.cpu_count() or 0,
            cpu_model=model,
            memory=memory,
            kernel=f"{platform.system()} {platform.release()}",
            python=f"{platform.python_implementation()} {platform.python_version()}",
            openssl=f"{ssl.OPENSSL_VERSION} (Python's); CLI: {first_line(['openssl', 'version'])}",
            mosquitto=first_line([mosquitto, "-h"]) if mosquitto else "not installed",
            blackbox=first_line([blackbox_binary(), "--version"]),
        )

    def lines(self) -> list[str]:
        return [
            f"- CPU: {self.cores} cores, {self.cpu_model}; memory {self.memory}; {self.kernel}",
            f"- {self.python}; {self.openssl}",
            f"- {self.mosquitto}; {self.blackbox}",
        ]


@dataclass
class Results:
    args: argparse.Namespace
    machine: Machine
    fleet_build: float
    kinds: dict[str, int]
    floors: list[Floor]
    blackbox: list[BlackboxPass]
    blackbox_rss: float
    ours: ExporterRun
    started: str
    seconds: float = 0.0
    #: the lean prober (bench/lean.py), burst and steady, and its profile in steady state
    lean: list[LeanPass] = field(default_factory=list)
    lean_profile: Profile | None = None
    #: /metrics of a synthetic 10,000-broker fleet under each --metrics.chain (bench.format)
    texts: list[FleetText] = field(default_factory=list)
    #: pickling + unpickling one result (what worker processes would add per probe)
    handoff: float = float("nan")
    #: the first sweep on the cores: one process, two shards, blackbox bounded and not (bench.firstsweep)
    first_sweeps: list[SweepPass] = field(default_factory=list)

    def lean_in(self, mode: str) -> LeanPass | None:
        return next((p for p in self.lean if p.mode == mode), None)

    @property
    def floor(self) -> float:
        return statistics.fmean(f.cpu_per_handshake for f in self.floors)

    def bb(self, module: str, mode: str) -> BlackboxPass:
        return next(p for p in self.blackbox if p.module == module and p.mode == mode)

    @property
    def bb_steady_passes(self) -> list[BlackboxPass]:
        return [p for p in self.blackbox if p.module == "mqtt_tls" and p.mode == "steady"]

    @property
    def bb_steady(self) -> BlackboxPass:
        """blackbox's steady state: its passes before and after ours, pooled (probes and CPU summed)."""
        passes = self.bb_steady_passes
        return BlackboxPass(
            "mqtt_tls",
            "steady",
            sum(p.probes for p in passes),
            sum(p.wall for p in passes),
            Cpu(sum(p.cpu.user for p in passes), sum(p.cpu.system for p in passes)),
            sum(p.succeeded for p in passes),
            sum(p.with_expiry for p in passes),
        )

    @property
    def bb_grid(self) -> BlackboxPass | None:
        """blackbox driven on our exporter's grid (the requests of a tick together), when measured."""
        return next((p for p in self.blackbox if p.module == "mqtt_tls" and p.mode == "grid"), None)

    @property
    def bb_burst(self) -> BlackboxPass:
        return self.bb("mqtt_tls", "burst")

    @property
    def bb_insecure(self) -> BlackboxPass:
        return self.bb("mqtt_tls_insecure", "burst")
