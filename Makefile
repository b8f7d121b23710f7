# The two commands of the README: `make run` (a self-contained demo) and `make test`.
# Both create the virtualenv, install the package and the Debian packages the tests need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CONFIG ?= config.example.yaml
PYTEST_ARGS ?=

.PHONY: run serve check test lint unit system-packages venv bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV) || (bash scripts/ensure-system-packages.sh venv && $(PYTHON) -m venv $(VENV))
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
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

## test: lint, type-check and the whole suite (real Mosquitto, RabbitMQ, amqtt, Prometheus and promtool)
test: venv system-packages lint
	bash scripts/ensure-system-packages.sh brokers
	$(BIN)/pytest -n 2 $(PYTEST_ARGS)

unit: venv
	$(BIN)/pytest -m 'not slow' $(PYTEST_ARGS)

## bench: our exporter against blackbox_exporter and the openssl s_time floor (docs/performance.md)
bench: venv system-packages
	bash scripts/ensure-system-packages.sh bench
	$(BIN)/pip install --quiet --disable-pip-version-check py-spy  # the Python side of the profile
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
