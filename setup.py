"""Records where a build came from: the wheel's exporter/_build_info.json (git revision, branch, date).

Everything else about the distribution is in pyproject.toml. Sources, first that answers:
  1. MQTT_CERT_EXPORTER_REVISION / MQTT_CERT_EXPORTER_BRANCH (the Dockerfile passes its build args; the
     build context has no .git), and SOURCE_DATE_EPOCH for the date (reproducible builds);
  2. git, when building from a checkout;
  3. the file an sdist already carries (a wheel built from the sdist keeps the checkout's facts).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent
RECORD = Path("mqtt_cert_exporter") / "_build_info.json"  # in the built package (its import name)
SOURCE_RECORD = Path("exporter") / "_build_info.json"  # in the source folder, which an sdist carries


def _git(*args: str) -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(HERE), *args], capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip()


def _build_date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "")
    seconds = int(epoch) if epoch.isdigit() else int(time.time())
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def build_record() -> dict[str, str] | None:
    revision = os.environ.get("MQTT_CERT_EXPORTER_REVISION", "") or _git("rev-parse", "HEAD")
    if not revision:
        return None
    if _git("status", "--porcelain", "--untracked-files=no"):
        revision += "-dirty"
    branch = os.environ.get("MQTT_CERT_EXPORTER_BRANCH", "") or _git("rev-parse", "--abbrev-ref", "HEAD")
    return {"revision": revision, "branch": branch or "unknown", "build_date": _build_date()}


def write_record(package_root: Path, where: Path = RECORD) -> None:
    record = build_record()
    target = package_root / where
    if record is None:
        carried = HERE / SOURCE_RECORD
        if not carried.is_file():
            return
        record = json.loads(carried.read_text(encoding="utf-8"))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


class BuildPyWithRecord(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            write_record(Path(self.build_lib))


class SdistWithRecord(sdist):
    def make_release_tree(self, base_dir: str, files: list[str]) -> None:
        super().make_release_tree(base_dir, files)
        write_record(Path(base_dir), SOURCE_RECORD)


setup(cmdclass={"build_py": BuildPyWithRecord, "sdist": SdistWithRecord})
