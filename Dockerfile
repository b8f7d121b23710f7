# mqtt-cert-exporter image: a virtualenv on a Debian-like base with python3 (>= 3.11) and python3-venv.
#
#   make image BASE_IMAGE=...      (passes the version, git revision and branch; see docs/deployment.md)
#
# BASE_IMAGE has no default: pick one your machines can pull, pinned by digest, e.g.
# python:3.11-slim-bookworm@sha256:..., or build one from Debian packages without any registry:
# scripts/build-base-image.sh (debootstrap + python3, python3-venv, ca-certificates, python-is-python3).
# Dependencies come from requirements.lock (exact versions, PyPI hashes); `make lock` refreshes it.
ARG BASE_IMAGE

# --- build: dependencies (one layer per lock), then the package, into /opt/mqtt-cert-exporter ---
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
RUN python3 -m venv /opt/mqtt-cert-exporter
COPY requirements.lock /src/requirements.lock
# Only the lock is in this layer: a code change reuses it, a lock change rebuilds it.
RUN /opt/mqtt-cert-exporter/bin/pip install --require-hashes --no-deps --only-binary=:all: \
      --requirement /src/requirements.lock
COPY pyproject.toml setup.py README.md LICENSE /src/
COPY exporter /src/exporter
# Recorded in the wheel's build info (--version, mqtt_cert_exporter_build_info): the build context has
# no .git, so `make image` passes them. The build date is the time of this step.
ARG REVISION=""
ARG BRANCH=""
RUN MQTT_CERT_EXPORTER_REVISION="${REVISION}" MQTT_CERT_EXPORTER_BRANCH="${BRANCH}" \
      /opt/mqtt-cert-exporter/bin/pip install --no-deps --no-index --no-build-isolation /src \
 && /opt/mqtt-cert-exporter/bin/pip uninstall --yes setuptools pip \
 && /opt/mqtt-cert-exporter/bin/mqtt-cert-exporter --version

# --- runtime: the same base (the virtualenv links to its python), not root, nothing writable ---
FROM ${BASE_IMAGE}
ARG VERSION=""
ARG REVISION=""
LABEL org.opencontainers.image.title="mqtt-cert-exporter" \
      org.opencontainers.image.description="Prometheus exporter that probes MQTT brokers over TLS: certificate expiry, trust problems, handshake and CONNACK failures" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="https://github.com/mqtt-cert-exporter/mqtt-cert-exporter/blob/main/docs/deployment.md" \
      org.opencontainers.image.source="https://github.com/mqtt-cert-exporter/mqtt-cert-exporter"
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin exporter
COPY --from=build /opt/mqtt-cert-exporter /opt/mqtt-cert-exporter
# Probes nothing (see the file); mount a directory with your config.yaml over /etc/mqtt-cert-exporter.
COPY deploy/docker/config.yaml /etc/mqtt-cert-exporter/config.yaml
ENV PATH=/opt/mqtt-cert-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
EXPOSE 9883
# Asks /-/healthy over loopback, with TLS if the exporter speaks it; loopback needs no basic auth, so
# this works with --web.config.file. Listening elsewhere: --health-cmd "mqtt-cert-exporter-healthcheck
# --web.listen-address=:PORT"; client certificates required: add --tls.cert-file and --tls.key-file.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["mqtt-cert-exporter-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["mqtt-cert-exporter"]
CMD ["--config.file=/etc/mqtt-cert-exporter/config.yaml", "--web.listen-address=:9883"]
