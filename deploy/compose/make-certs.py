"""Make the throw-away CA and broker certificates of the docker-compose demo (run by its `certs` service).

    python make-certs.py DIRECTORY

Writes ca.pem (the demo root CA), good.pem/good.key (valid 90 days) and expiring.pem/expiring.key
(expires in 10 days), for the host name `mosquitto`. Keys are world-readable: demo only.
Does nothing when ca.pem already exists, so restarts keep the certificates.
"""

from __future__ import annotations

import datetime as dt
import shutil
import sys
from pathlib import Path

from mqtt_cert_exporter.lab.pki import Pki


def main(directory: Path) -> int:
    if (directory / "ca.pem").exists():
        print(f"{directory}/ca.pem exists, keeping the certificates")
        return 0
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory / "work")
    root = pki.root("Demo Root CA")
    names = ("mosquitto", "localhost")
    now = dt.datetime.now(dt.UTC)
    leaves = {
        "good": pki.leaf("mosquitto-good", root, dns_names=names),
        "expiring": pki.leaf(
            "mosquitto-expiring", root, dns_names=names, not_after=now + dt.timedelta(days=10)
        ),
    }
    shutil.copyfile(root.cert_path, directory / "ca.pem")
    for name, issued in leaves.items():
        shutil.copyfile(issued.cert_path, directory / f"{name}.pem")
        shutil.copyfile(issued.key_path, directory / f"{name}.key")
    shutil.rmtree(directory / "work")
    for path in directory.iterdir():
        path.chmod(0o644)
    print(f"wrote {', '.join(sorted(p.name for p in directory.iterdir()))} to {directory}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "/certs")))
