"""Whether the configuration file the process reads is still the one on disk.

A configuration mounted into a container as a single file (``-v ./config.yaml:/etc/...``, Kubernetes
``subPath``) is bound to the file's inode. Editors, ``sed -i`` and most deploy tools replace a file by
writing a new one and renaming it over the old: the mount keeps showing the old, now unlinked, file
(link count 0) and a reload would silently read the old content. A reload refuses that with this
message instead; mounting the directory avoids it.
"""

from __future__ import annotations

import os


def replaced_file_message(path: str, links: int) -> str | None:
    """Pure: the error to report when the file at ``path`` has ``links`` hard links, or None."""
    if links > 0:
        return None
    return (
        f"{path} was deleted or replaced on the host after it was mounted as a single file; the mount "
        "still shows the old content, so the new configuration cannot be seen. Mount the directory "
        "that holds it instead (e.g. -v ./config-dir:/etc/mqtt-cert-exporter:ro), then restart"
    )


def replaced_since_mounted(path: str) -> str | None:
    """The error when ``path`` is a single-file mount whose file was replaced; None otherwise
    (also when it cannot be read: loading it then reports that)."""
    try:
        links = os.stat(path).st_nlink
    except OSError:
        return None
    return replaced_file_message(path, links)
