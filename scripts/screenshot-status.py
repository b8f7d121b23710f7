#!/usr/bin/env python3
"""Regenerate docs/status.png: the status page of `make run`'s demo brokers, in headless chromium.

    .venv/bin/python scripts/screenshot-status.py [OUTPUT.png]

Starts the demo on a free loopback port, waits until it has printed every broker's report (all of them
probed), takes the screenshot, stops the demo (which removes its files).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.lab.browser import screenshot

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    output = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "status.png"
    demo = subprocess.Popen(
        [sys.executable, "-m", "mqtt_cert_exporter", "demo", "--web.listen-address", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert demo.stdout is not None
        page = ""
        for line in demo.stdout:
            if line.startswith("status page:") and not page:
                page = line.split()[2]
            if line.startswith("metrics:"):  # printed once every broker was checked
                break
        if not page:
            print("the demo did not print its status page URL", file=sys.stderr)
            return 1
        deadline = time.monotonic() + 30
        while json.loads(urllib.request.urlopen(page + "api/v1/brokers", timeout=5).read())["counts"][
            "pending"
        ]:
            if time.monotonic() > deadline:
                print("the demo's brokers were not all probed within 30 s", file=sys.stderr)
                return 1
            time.sleep(0.2)
        screenshot(page, output, window_size=(1280, 720))
        print(f"wrote {output}")
        return 0
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            demo.wait(timeout=15)
        except subprocess.TimeoutExpired:
            demo.kill()
            demo.wait()


if __name__ == "__main__":
    sys.exit(main())
