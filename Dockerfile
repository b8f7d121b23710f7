# syntax=docker/dockerfile:1
# mqtt-cert-exporter: docker build -t mqtt-cert-exporter:0.1.0 .
# Run:  docker run -p 9883:9883 -v "$PWD/config.yaml:/etc/mqtt-cert-exporter/config.yaml:ro" mqtt-cert-exporter:0.1.0
ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install the package and its dependencies into a self-contained virtualenv ---
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/mqtt-cert-exporter \
 && /opt/mqtt-cert-exporter/bin/pip install . \
 && /opt/mqtt-cert-exporter/bin/pip uninstall --yes pip \
 && /opt/mqtt-cert-exporter/bin/mqtt-cert-exporter --version

# --- runtime: the same base image (the virtualenv links to its python), no build tools, not root ---
FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="mqtt-cert-exporter" \
      org.opencontainers.image.description="Prometheus exporter that probes MQTT brokers over TLS: certificate expiry, trust problems, handshake and CONNACK failures" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.documentation="https://github.com/mqtt-cert-exporter/mqtt-cert-exporter/blob/main/docs/deployment.md" \
      org.opencontainers.image.source="https://github.com/mqtt-cert-exporter/mqtt-cert-exporter" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11-slim"
RUN groupadd --system --gid 10001 exporter \
 && useradd --system --uid 10001 --gid exporter --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin exporter \
 && mkdir -p /etc/mqtt-cert-exporter
COPY --from=build /opt/mqtt-cert-exporter /opt/mqtt-cert-exporter
# A working default; mount your own over it (a file or the whole directory, read-only).
COPY config.example.yaml /etc/mqtt-cert-exporter/config.yaml
ENV PATH=/opt/mqtt-cert-exporter/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MQTT_CERT_EXPORTER_HEALTHCHECK_URL=http://127.0.0.1:9883/-/healthy
USER 10001:10001
EXPOSE 9883
# No curl in the image: Python asks /-/healthy. Set MQTT_CERT_EXPORTER_HEALTHCHECK_URL when the
# exporter listens elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(os.environ['MQTT_CERT_EXPORTER_HEALTHCHECK_URL'], timeout=4)"]
ENTRYPOINT ["mqtt-cert-exporter"]
CMD ["--config.file=/etc/mqtt-cert-exporter/config.yaml", "--web.listen-address=:9883"]
