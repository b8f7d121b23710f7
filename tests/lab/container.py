"""A Docker engine for the image test: Debian's docker.io, started here when none runs, and a local
base image from Debian packages (scripts/build-base-image.sh), since no registry can be reached.

``engine()`` says why it cannot run (``Unavailable``) instead of failing: the test then skips with
that message.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: Debian's client; another `docker` (a wrapper, a newer CLI) may come first on PATH.
DOCKER = "/usr/bin/docker"
DOCKERD = "/usr/sbin/dockerd"
#: The field notes' flags: no iptables/forwarding changes on a shared machine; overlay2 works here.
DOCKERD_FLAGS = (
    "--iptables=false",
    "--ip6tables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--storage-driver=overlay2",
)
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class Unavailable(Exception):
    """No container engine can run here; the message says why and what would fix it."""


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [DOCKER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
        check=False,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return done


def _answers() -> bool:
    try:
        return docker("info", timeout=20, check=False).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@contextmanager
def engine() -> Iterator[None]:
    """A running Docker engine: the one already running, or dockerd started (as root) for the
    duration and stopped afterwards."""
    if not os.path.exists(DOCKER) or not os.path.exists(DOCKERD):
        raise Unavailable(
            "Debian's docker.io is not installed: run scripts/ensure-system-packages.sh container"
        )
    if _answers():
        yield
        return
    if os.geteuid() != 0:
        raise Unavailable("no Docker engine runs and starting dockerd needs root")
    state = Path(tempfile.mkdtemp(prefix="mqtt-cert-exporter-dockerd."))
    log = state / "dockerd.log"
    with open(log, "wb") as output:
        daemon = subprocess.Popen(
            [DOCKERD, *DOCKERD_FLAGS, f"--pidfile={state / 'dockerd.pid'}"],
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while not _answers():
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise Unavailable(f"dockerd does not start here:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        yield
    finally:
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        shutil.rmtree(state, ignore_errors=True)


def base_image() -> str:
    """scripts/build-base-image.sh's Debian base (built once per machine), plus this machine's CA
    bundle so that pip inside the build trusts what the host trusts (a TLS-intercepting proxy's CA);
    tagged by content, so also built once."""
    if shutil.which("debootstrap") is None and not os.path.exists("/usr/sbin/debootstrap"):
        raise Unavailable("debootstrap is not installed: run scripts/ensure-system-packages.sh container")
    built = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-base-image.sh")],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(f"scripts/build-base-image.sh failed:\n{built.stderr[-4000:]}")
    base = built.stdout.strip().splitlines()[-1]
    bundle = HOST_CA_BUNDLE.read_bytes() if HOST_CA_BUNDLE.is_file() else b""
    if not bundle:
        return base
    tag = f"{base}-hostca-{hashlib.sha256(base.encode() + bundle).hexdigest()[:12]}"
    if docker("image", "inspect", tag, check=False).returncode == 0:
        return tag
    with tempfile.TemporaryDirectory() as context:
        (Path(context) / "ca-certificates.crt").write_bytes(bundle)
        (Path(context) / "Dockerfile").write_text(
            f"FROM {base}\nCOPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt\n"
        )
        docker("build", "--quiet", "-t", tag, context)
    return tag


#: On the images this test builds, so that their superseded versions can be pruned (and nothing else).
TEST_LABEL = "org.mqtt-cert-exporter.test=1"


def build_image(tag: str, base: str, build_args: Sequence[str] = ()) -> None:
    """The project's Dockerfile, unchanged, with the legacy builder (BuildKit would fetch a frontend).
    The previous build of ``tag``, untagged now, is removed: a machine keeps one test image."""
    args = [f"--build-arg=BASE_IMAGE={base}", *(f"--build-arg={arg}" for arg in build_args)]
    docker("build", "--network=host", f"--label={TEST_LABEL}", *args, "-t", tag, str(ROOT), timeout=900)
    docker("image", "prune", "--force", f"--filter=label={TEST_LABEL}", check=False)
