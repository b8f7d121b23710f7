"""The web-side attacks of issue 18, measured against a real exporter process (docs/reliability.md).

    python -m bench.web_attacks [--only NAME ...]

Each attack prints one line of figures. Loopback only; the exporter runs with an fd limit of 1024 (what
the issue measured with), the client raises its own limit to the hard limit.
"""

from __future__ import annotations

import argparse
import base64
import os
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import bcrypt

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))
os.execv(sys.executable, [sys.executable, "-m", "mqtt_cert_exporter", *sys.argv[1:]])
"""


@contextmanager
def exporter(
    workdir: Path, config_text: str, *flags: str
) -> Iterator[tuple[subprocess.Popen[bytes], str, Path]]:
    config = workdir / "config.yaml"
    config.write_text(config_text)
    log = workdir / f"exporter-{time.monotonic_ns()}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WRAPPER,
                f"--config.file={config}",
                "--web.listen-address=127.0.0.1:0",
                *flags,
            ],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 30
        while "msg=started" not in log.read_text():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(log.read_text())
            time.sleep(0.05)
        url = log.read_text().split("url=", 1)[1].split()[0].rsplit("/", 1)[0]
        yield process, url, log
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)


def timed_get(url: str, headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, float]:
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=timeout
        ) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError:
        status = 0
    return status, time.perf_counter() - started


def summary(latencies: list[float]) -> str:
    if not latencies:
        return "none"
    return f"median {statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"


def fds(process: subprocess.Popen[bytes]) -> int:
    return len(os.listdir(f"/proc/{process.pid}/fd"))


def slowloris(workdir: Path) -> str:
    with exporter(workdir, "brokers: []\n") as (process, url, _):
        host, port = url.split("//")[1].split(":")
        held = []
        for number in range(3000):  # 1,000 slow heads, 2,000 idle
            try:
                sock = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                continue
            if number % 3 == 0:
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            held.append(sock)
        results = [timed_get(url + "/metrics") for _ in range(104)]
        ok = [seconds for status, seconds in results if status == 200]
        open_fds = fds(process)
        for sock in held:
            sock.close()
    return f"slowloris+idle: 3,000 held, /metrics {len(ok)}/104 answered ({summary(ok)}), exporter fds {open_fds}"


def bad_requests(workdir: Path) -> str:
    with exporter(workdir, "brokers: []\n") as (_, url, log):
        host, port = url.split("//")[1].split(":")
        before = len(log.read_bytes())
        for _ in range(1000):
            with socket.create_connection((host, int(port)), timeout=5) as sock:
                sock.sendall(b"GET /metrics HTTP/1.1\nHost: x\nAuthorization: Basic dXNlcjpodW50ZXIy\n\n")
                while sock.recv(4096):
                    pass
        time.sleep(0.5)
        written = log.read_bytes()[before:]
    leaked = b"dXNlcjpodW50ZXIy" in written
    return f"bad requests: 1,000 bare-LF requests wrote {len(written) / 1000:.0f} bytes each, credentials logged: {leaked}"


def bcrypt_guesses(workdir: Path) -> str:
    password = b"scrape-me-please"
    users = {"prometheus": bcrypt.hashpw(password, bcrypt.gensalt(rounds=10)).decode()}
    web = workdir / "web.yml"
    web.write_text(
        "basic_auth_users:\n" + "".join(f"  {user}: '{hashed}'\n" for user, hashed in users.items())
    )
    token = "Basic " + base64.b64encode(b"prometheus:" + password).decode()
    with exporter(workdir, "brokers: []\n", f"--web.config.file={web}") as (_, url, _log):
        timed_get(url + "/metrics", {"Authorization": token})  # warm the cache
        stop = threading.Event()

        def guess() -> None:
            wrong = "Basic " + base64.b64encode(b"prometheus:guess").decode()
            while not stop.is_set():
                threading.Thread(target=timed_get, args=(url + "/metrics", {"Authorization": wrong})).start()
                time.sleep(1 / 12)

        guesser = threading.Thread(target=guess)
        guesser.start()
        time.sleep(1)
        scrapes = []
        for _ in range(50):
            time.sleep(0.1)
            scrapes.append(timed_get(url + "/metrics", {"Authorization": token})[1])
        stop.set()
        guesser.join()
        time.sleep(5)  # let the queued guesses drain

        def attempt(user: bytes) -> float:
            header = {"Authorization": "Basic " + base64.b64encode(user + b":wrong").decode()}
            return timed_get(url + "/metrics", header)[1]

        known_times: list[float] = []
        unknown_times: list[float] = []
        for turn in range(40):  # interleaved, each going first half of the time
            order = [(b"prometheus", known_times), (b"nobody", unknown_times)]
            for user, times in order if turn % 2 else reversed(order):
                times.append(attempt(user))
        known, unknown = statistics.median(known_times), statistics.median(unknown_times)
    return (
        f"bcrypt: cached scrape under 12 guesses/s (cost 10): {summary(scrapes)}; wrong password "
        f"{known * 1000:.0f} ms vs unknown user {unknown * 1000:.0f} ms (medians of 40, interleaved)"
    )


def _exit_seconds(process: subprocess.Popen[bytes], *, reloading: bool) -> float:
    if reloading:
        os.kill(process.pid, signal.SIGHUP)
        time.sleep(0.05)
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    return time.perf_counter() - started


def sighups(workdir: Path) -> str:
    brokers = "".join(f"  - name: b{n}\n    address: 127.0.0.1:{1 + n % 1000}\n" for n in range(10_000))
    text = "defaults:\n  interval: 1h\n  timeout: 1s\nbrokers:\n" + brokers
    with exporter(workdir, text) as (process, url, log):
        while log.read_text().count("broker probe fails") < 10_000:  # the first sweep is over
            time.sleep(0.5)
        worst: list[float] = []
        done = threading.Event()

        def scrape() -> None:
            while not done.is_set():
                worst.append(timed_get(url + "/-/healthy", timeout=30)[1])

        scraper = threading.Thread(target=scrape)
        scraper.start()
        for _ in range(1000):
            os.kill(process.pid, signal.SIGHUP)
        time.sleep(5)
        done.set()
        scraper.join()
        during_reload = _exit_seconds(process, reloading=True)
    with exporter(workdir, text) as (process, url, log):
        while log.read_text().count("broker probe fails") < 10_000:
            time.sleep(0.5)
        idle = _exit_seconds(process, reloading=False)
    return (
        f"1,000 SIGHUPs (10,000-broker config): /-/healthy {summary(worst)} over {len(worst)} requests; "
        f"SIGTERM during a reload: exit after {during_reload:.2f} s (without a reload: {idle:.2f} s)"
    )


def nul_targets(workdir: Path) -> str:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    with exporter(workdir, "brokers: []\n", r"--probe.allowed-target=.*\.example\.com:[0-9]+") as (
        process,
        url,
        _,
    ):
        before = fds(process)
        statuses = [timed_get(f"{url}/probe?target=127.0.0.1%00.example.com:{port}")[0] for _ in range(200)]
        wss = timed_get(f"{url}/probe?target=wss://127.0.0.1:{port}/x.example.com:1")[0]
        after = fds(process)
    listener.settimeout(0.1)
    try:
        listener.accept()
        connected = True
    except TimeoutError:
        connected = False
    listener.close()
    return (
        f"NUL target x200: statuses {sorted(set(statuses))}, fds {before} -> {after}; wss path bypass: {wss}; "
        f"a connection reached the listener: {connected}"
    )


ATTACKS: dict[str, Callable[[Path], str]] = {
    "nul": nul_targets,
    "slowloris": slowloris,
    "bad-requests": bad_requests,
    "bcrypt": bcrypt_guesses,
    "sighup": sighups,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS), default=sorted(ATTACKS))
    args = parser.parse_args()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.only:
            print(ATTACKS[name](Path(workdir)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
