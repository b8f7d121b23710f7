"""The daemon runs with the allocator setting its probes want (glibc's tcache), unless the operator chose."""

from __future__ import annotations

from pathlib import Path

import pytest

from mqtt_cert_exporter import launch
from tests.conftest import Lab, start_exporter

SETTING = f"{launch.TUNABLE}={launch.TCACHE_COUNT}"


def test_the_setting_is_added_on_glibc() -> None:
    tuned = launch.tuned_environment({"PATH": "/usr/bin"}, "glibc 2.36")
    assert tuned == {"PATH": "/usr/bin", "GLIBC_TUNABLES": SETTING, launch.RESTARTED: "1"}


def test_other_tunables_are_kept() -> None:
    tuned = launch.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, "glibc 2.36")
    assert tuned is not None
    assert tuned["GLIBC_TUNABLES"] == f"glibc.malloc.arena_max=2:{SETTING}"


@pytest.mark.parametrize(
    ("environ", "libc"),
    [
        ({"GLIBC_TUNABLES": "glibc.malloc.tcache_count=7"}, "glibc 2.36"),  # the operator's choice
        ({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2:glibc.malloc.tcache_count=0"}, "glibc 2.36"),
        ({launch.RESTARTED: "1"}, "glibc 2.36"),  # the loader dropped it (setuid): no second restart
        ({}, None),  # musl, macOS
    ],
)
def test_no_restart(environ: dict[str, str], libc: str | None) -> None:
    assert launch.tuned_environment(environ, libc) is None


def test_a_longer_name_is_not_the_setting() -> None:
    tuned = launch.tuned_environment({"GLIBC_TUNABLES": "glibc.malloc.tcache_count_x=1"}, "glibc 2.36")
    assert tuned is not None


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if b"=" in item)


@pytest.mark.slow
@pytest.mark.skipif(launch.glibc_version() is None, reason="glibc only")
@pytest.mark.parametrize(
    ("given", "expected"),
    [(None, SETTING), ("glibc.malloc.tcache_count=7", "glibc.malloc.tcache_count=7")],
)
def test_the_daemon_process_runs_with_it(lab: Lab, tmp_path: Path, given: str | None, expected: str) -> None:
    """Same PID and arguments (what systemd and Docker watch), the setting in force, serving."""
    config = tmp_path / "config.yaml"
    config.write_text(lab.config_yaml("good"))
    process = start_exporter(config, tmp_path, env={"GLIBC_TUNABLES": given} if given else None)
    try:
        pid = process.process.pid
        assert _environ(pid)["GLIBC_TUNABLES"] == expected
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        assert f"--config.file={config}".encode() in arguments
        assert "mqtt_cert_exporter_build_info" in process.get("/metrics")
    finally:
        process.stop()
