"""The exporter as a real process (`python -m mqtt_cert_exporter`), for the tests, the soak and the benchmark."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

#: The "listening" log line, in logfmt or JSON: the bound /metrics URL (the port may be ephemeral).
LISTENING = re.compile(r'listening.*?url[=":\s]+(https?://[^\s"]+)/metrics')


def start_exporter_process(
    config: Path,
    log_path: Path,
    *flags: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 30,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start the exporter on an ephemeral loopback port; return the process and its base URL
    (``http://127.0.0.1:PORT``). Raises RuntimeError with the log when it exits or does not start."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mqtt_cert_exporter",
                f"--config.file={config}",
                "--web.listen-address=127.0.0.1:0",
                *flags,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env={**os.environ, **(env or {})},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace")
        found = LISTENING.search(text)
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"exporter exited with {process.returncode}:\n{text}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"exporter did not start:\n{log_path.read_text(errors='replace')}")


def stop_process(process: subprocess.Popen[bytes]) -> int:
    """SIGTERM, SIGKILL after 10 s; the exit code. Idempotent."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode
