# The two commands of the README: `make run` (a self-contained demo) and `make test`.
# Both create the virtualenv, install the package and the Debian packages the tests need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config.example.yaml
PYTEST_ARGS ?=

.PHONY: run serve check test lint unit system-packages venv bench clean lock wheel image

# Strict editable install: exporter/ is linked into build/ as mqtt_cert_exporter (the import name), which
# mypy and every tool can follow; a folder's new or removed module needs a re-install, hence the folders.
$(STAMP): pyproject.toml setup.py $(shell find exporter -type d -not -name __pycache__)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV) || (bash scripts/ensure-system-packages.sh venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' --config-settings editable_mode=strict
	touch $(STAMP)

venv: $(STAMP)

system-packages:
	bash scripts/ensure-system-packages.sh

## run: start local demo brokers with good and broken certificates and the exporter against them
run: venv system-packages
	$(BIN)/mqtt-cert-exporter demo

## serve: run the exporter on $(CONFIG)
serve: venv
	$(BIN)/mqtt-cert-exporter --config.file=$(CONFIG)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/mypy -p mqtt_cert_exporter

## test: lint, type-check and the whole suite (real Mosquitto, RabbitMQ, amqtt, ejabberd, Prometheus,
## promtool and chromium)
## (the container engine and kubectl are optional: without them tests/test_image.py and the kustomize
## check skip, saying why)
test: venv system-packages lint
	bash scripts/ensure-system-packages.sh brokers
	bash scripts/ensure-system-packages.sh container kubectl || echo "make test: no container engine or kubectl: those tests skip" >&2
	bash scripts/ensure-system-packages.sh browser  # the status page's real-browser test (chromium)
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

## bench: our exporter against blackbox_exporter and the openssl s_time floor (docs/performance.md)
bench: venv system-packages
	bash scripts/ensure-system-packages.sh bench
	$(BIN)/pip install --quiet --disable-pip-version-check py-spy  # the Python side of the profile
	$(BIN)/python -m bench

## lock: re-resolve requirements.lock (runtime dependencies and setuptools for the image build, with the
## hashes of every file PyPI has for each version), straight from PyPI: this machine's pip
## configuration (local indexes, find-links, constraints) is left out so the hashes are those a
## clean machine downloads. Run after changing `dependencies` in pyproject.toml, or to take updates.
LOCK_CERT ?= $(firstword $(wildcard /etc/ssl/certs/ca-certificates.crt))
lock: venv
	$(BIN)/pip install --quiet --disable-pip-version-check 'pip-tools>=7.4'
	env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL PIP_CONFIG_FILE=/dev/null CUSTOM_COMPILE_COMMAND='make lock' \
	  $(BIN)/pip-compile --quiet --upgrade --generate-hashes --allow-unsafe --build-deps-for=wheel \
	  --strip-extras --no-emit-index-url --no-emit-find-links --index-url=https://pypi.org/simple \
	  $(if $(LOCK_CERT),--pip-args='--cert=$(LOCK_CERT)') \
	  --output-file=requirements.lock pyproject.toml

## wheel: dist/mqtt_cert_exporter-VERSION-py3-none-any.whl (and the sdist), the unit of release
wheel: venv
	$(BIN)/pip install --quiet --disable-pip-version-check build
	$(BIN)/python -m build --outdir dist .

## image: the container image (BASE_IMAGE=... required; docs/deployment.md), tagged with the version
IMAGE ?= mqtt-cert-exporter
DOCKER ?= docker
image: venv
	@test -n "$(BASE_IMAGE)" || { echo "make image: set BASE_IMAGE (docs/deployment.md)" >&2; exit 2; }
	version=$$($(BIN)/python -c 'from importlib.metadata import version; print(version("mqtt-cert-exporter"))') && \
	DOCKER_BUILDKIT=0 $(DOCKER) build --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	  --build-arg VERSION=$$version --build-arg REVISION=$$(git rev-parse HEAD)$$(git diff --quiet HEAD || echo -dirty) \
	  --build-arg BRANCH=$$(git rev-parse --abbrev-ref HEAD) \
	  $(DOCKER_BUILD_ARGS) -t $(IMAGE):$$version .

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
