#!/usr/bin/env bash
# Build the image's base locally from Debian packages, for machines that reach no container registry.
#
#   scripts/build-base-image.sh            prints the tag of the base image (building it if missing)
#
# The base: `debootstrap --variant=minbase bookworm` + python3, python3-venv, ca-certificates,
# python-is-python3, imported with `docker import`. Its tag carries a content key (this script, the
# suite, the mirror, the packages), so it is built once per machine and rebuilt when any of them
# changes. Use it as the Dockerfile's base:
#
#   docker build --build-arg BASE_IMAGE="$(scripts/build-base-image.sh)" ...
#
# Needs root, debootstrap and a running Docker engine. The mirror is the first Debian one of the apt
# sources (override with DEBIAN_MIRROR); DOCKER (default /usr/bin/docker) names the client.
set -euo pipefail

SUITE=${DEBIAN_SUITE:-bookworm}
PACKAGES=python3,python3-venv,ca-certificates,python-is-python3
DOCKER=${DOCKER:-/usr/bin/docker}

debian_mirror() {
    local files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    # one-line format: "deb URL SUITE ..."; deb822 format: "URIs: URL"
    cat "${files[@]}" 2>/dev/null |
        sed -n -E 's/^deb +(\[[^]]*\] +)?(https?:[^ ]+) .*/\2/p; s/^URIs: *(https?:[^ ]+).*/\1/p' |
        grep -v -E 'security|updates' | grep -m1 -i debian
}

MIRROR=${DEBIAN_MIRROR:-$(debian_mirror || true)}
if [[ -z $MIRROR ]]; then
    echo "build-base-image: no Debian mirror in the apt sources; set DEBIAN_MIRROR" >&2
    exit 1
fi

key=$({ cat "$0"; echo "$SUITE $MIRROR $PACKAGES"; } | sha256sum | cut -c1-16)
tag="mqtt-cert-exporter-base:$SUITE-$key"
if "$DOCKER" image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

root=$(mktemp -d /var/tmp/mqtt-cert-exporter-base.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "build-base-image: debootstrap $SUITE from $MIRROR into $root" >&2
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$root" "$MIRROR" >&2
# Nothing the image needs: package lists and caches.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb
tar -C "$root" -c . | "$DOCKER" import - "$tag" >&2
echo "$tag"
