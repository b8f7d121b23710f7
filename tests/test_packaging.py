"""The wheel is the unit of release: what it holds, its metadata, and the build facts it records."""

from __future__ import annotations

import email
import json
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from mqtt_cert_exporter import __version__
from mqtt_cert_exporter.buildinfo import BuildInfo, parse_recorded, version_text
from mqtt_cert_exporter.configfile import replaced_file_message, replaced_since_mounted
from tests.conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel as a release builds it: from a clean checkout of this commit, never from the working
    tree, whose build/ holds the editable install and may hold a stale build that would end up in it."""
    out = tmp_path_factory.mktemp("wheel")
    source = out / "source"
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout: the wheel is built from a clean clone of the commit")
    subprocess.run(["git", "clone", "--quiet", "--local", str(ROOT), str(source)], check=True, timeout=120)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(out), str(source)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = out.glob("mqtt_cert_exporter-*.whl")
    return zipfile.ZipFile(path)


def dist_info(wheel: zipfile.ZipFile, name: str) -> str:
    (path,) = [item for item in wheel.namelist() if item.endswith(f".dist-info/{name}")]
    return wheel.read(path).decode()


def test_wheel_metadata_spdx_license_and_one_version(wheel: zipfile.ZipFile) -> None:
    metadata = email.message_from_string(dist_info(wheel, "METADATA"))
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["License-File"] == "LICENSE"
    assert metadata["Version"] == PYPROJECT["project"]["version"] == __version__
    assert any(value.startswith("Source, ") for value in metadata.get_all("Project-URL") or [])
    assert "Topic :: System :: Monitoring" in (metadata.get_all("Classifier") or [])
    assert "Apache License" in dist_info(wheel, "licenses/LICENSE")
    assert (ROOT / "LICENSE").read_text() == dist_info(wheel, "licenses/LICENSE")
    # The version is written once: nowhere in the code or the Dockerfile.
    assert f'"{__version__}"' not in (ROOT / "exporter" / "__init__.py").read_text()
    assert __version__ not in (ROOT / "Dockerfile").read_text()


def test_wheel_records_the_git_revision(wheel: zipfile.ZipFile) -> None:
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if revision.returncode != 0:
        pytest.skip("not a git checkout")
    recorded = json.loads(wheel.read("mqtt_cert_exporter/_build_info.json"))
    assert recorded["revision"].removesuffix("-dirty") == revision.stdout.strip()
    assert recorded["build_date"].endswith("Z") and recorded["branch"]


def test_wheel_ships_the_demo_lab_but_not_the_test_lab(wheel: zipfile.ZipFile) -> None:
    names = set(wheel.namelist())
    assert {
        "mqtt_cert_exporter/lab/pki.py",
        "mqtt_cert_exporter/lab/mosquitto.py",
        "mqtt_cert_exporter/demo.py",
    } <= names
    assert not [name for name in names if "hostile" in name or name.startswith("tests/")]
    assert "mqtt_cert_exporter/lab/process.py" not in names
    assert "mqtt_cert_exporter/py.typed" in names
    # every package of the source folder is in the wheel, under the import name that cannot collide
    packages = {
        "mqtt_cert_exporter/" + init.relative_to(ROOT / "exporter").as_posix()
        for init in (ROOT / "exporter").rglob("__init__.py")
    }
    assert packages <= names, sorted(packages - names)
    assert not [name for name in names if name.startswith("exporter/")]
    entry_points = dist_info(wheel, "entry_points.txt")
    assert "mqtt-cert-exporter = mqtt_cert_exporter.launch:main" in entry_points
    assert "mqtt-cert-exporter-healthcheck = mqtt_cert_exporter.healthcheck:run" in entry_points


def test_version_text_reads_like_blackbox_exporter() -> None:
    info = BuildInfo(
        "1.2.3", "abc123", "main", "2026-01-02T03:04:05Z", "3.11.2", "CPython", "OpenSSL 3.0", "linux/x86_64"
    )
    lines = version_text(info).splitlines()
    assert lines[0] == "mqtt-cert-exporter, version 1.2.3 (branch: main, revision: abc123)"
    assert "  build date:       2026-01-02T03:04:05Z" in lines
    assert "  python version:   3.11.2 (CPython)" in lines
    assert "  openssl version:  OpenSSL 3.0" in lines


def test_recorded_build_facts_tolerate_bad_files() -> None:
    assert parse_recorded(None) == {} and parse_recorded("") == {} and parse_recorded("[1]") == {}
    assert parse_recorded("{not json") == {}
    assert parse_recorded('{"revision": "abc", "branch": 3}') == {"revision": "abc"}


def test_replaced_config_file_is_named_with_the_fix(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("brokers: []\n")
    assert replaced_since_mounted(str(config)) is None
    assert replaced_since_mounted(str(tmp_path / "missing.yaml")) is None  # loading reports that
    message = replaced_file_message("/etc/mqtt-cert-exporter/config.yaml", 0)
    assert message is not None
    assert message.startswith("/etc/mqtt-cert-exporter/config.yaml was deleted or replaced")
    assert "Mount the directory" in message


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """requirements.lock (what the image installs with --require-hashes) is current with pyproject.toml:
    `make lock` refreshes it."""
    pinned: dict[str, list[str]] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if found := re.match(r"([a-z0-9][a-z0-9._-]*)==\S+", line, re.I):
            hashes = pinned.setdefault(canonical(found[1]), [])
        elif found := re.search(r"--hash=sha256:[0-9a-f]{64}", line):
            hashes.append(found[0])
    for requirement in PYPROJECT["project"]["dependencies"]:
        name = canonical(re.split(r"[<>=;\s\[]", requirement, maxsplit=1)[0])
        assert name in pinned, f"{name} is a dependency but not in requirements.lock: run make lock"
    assert "setuptools" in pinned, "the image builds the package with the locked setuptools"
    assert all(pinned.values()), "every pinned package carries its hashes"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()
