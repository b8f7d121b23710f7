"""Debian's headless ``chromium``, kept to loopback: the DOM after rendering, and screenshots.

Chromium tries to reach update and account servers even with background networking off, so every run
gets a proxy address that is bound but never listens (loopback URLs bypass proxies: only they load),
and a fresh HOME, TMPDIR (short: its singleton socket path must stay under 107 bytes) and profile.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: Debian's package installs /usr/bin/chromium; other distributions name it differently.
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = (
    "--headless=new",
    "--no-sandbox",  # as root, and in containers, the sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--hide-scrollbars",
    "--force-device-scale-factor=1",
)


class BrowserError(RuntimeError):
    pass


def chromium_binary() -> str | None:
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


@contextmanager
def _dead_proxy() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` where PORT is bound (nobody else gets it) but never accepts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def run_chromium(url: str, *extra: str, timeout: float = 60) -> str:
    """Load ``url`` in a fresh headless chromium with ``extra`` flags; its stdout."""
    binary = chromium_binary()
    if binary is None:
        raise BrowserError("chromium is not installed: bash scripts/ensure-system-packages.sh browser")
    with tempfile.TemporaryDirectory(prefix="chr-", dir="/tmp") as home, _dead_proxy() as proxy:
        tmp = Path(home) / "t"
        tmp.mkdir()
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "TMPDIR": str(tmp),
            "XDG_CONFIG_HOME": home,
            "XDG_CACHE_HOME": home,
            "LANG": "C.UTF-8",
        }
        command = [
            binary,
            *FLAGS,
            f"--user-data-dir={Path(home) / 'profile'}",
            f"--proxy-server={proxy}",
            *extra,
            url,
        ]
        try:
            done = subprocess.run(command, capture_output=True, env=environment, timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BrowserError(f"chromium did not finish within {timeout:g}s loading {url}") from None
    if done.returncode != 0:
        raise BrowserError(
            f"chromium exited with {done.returncode}: {done.stderr.decode(errors='replace')[-2000:]}"
        )
    return done.stdout.decode(errors="replace")


def dump_dom(url: str, *, window_size: Sequence[int] = (1280, 1000)) -> str:
    """The document as chromium rendered it (after any script ran), serialised."""
    return run_chromium(url, "--dump-dom", f"--window-size={window_size[0]},{window_size[1]}")


def screenshot(url: str, path: Path, *, window_size: Sequence[int] = (1280, 1000)) -> Path:
    """A PNG of the page's first ``window_size`` pixels."""
    run_chromium(url, f"--screenshot={path}", f"--window-size={window_size[0]},{window_size[1]}")
    if not path.is_file() or path.stat().st_size == 0:
        raise BrowserError(f"chromium wrote no screenshot to {path}")
    return path
