"""Loopback port helpers."""

from __future__ import annotations

import socket
import time


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(host: str = "127.0.0.1") -> int:
    """Return a port that was free on ``host`` a moment ago (bind to port 0, read it, close).

    Another process may grab it before the caller binds it: callers must cope with that race.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True if a TCP connection to ``host:port`` succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> None:
    """Wait until ``host:port`` accepts TCP connections; raise ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        if port_open(host, port, timeout=min(0.5, max(0.05, deadline - time.monotonic()))):
            return
        if time.monotonic() >= deadline:
            shown = f"[{host}]" if ":" in host else host
            raise TimeoutError(f"{shown}:{port} did not accept TCP connections within {timeout:g} s")
        time.sleep(0.02)
