# unifrost — the two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint docs services browser bench bench-peers bench-brokers clean

$(STAMP): setup.cfg setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve the demo on the in-memory broker: http://127.0.0.1:8080/
run: install
	$(BIN)/unifrost serve --demo --listen 127.0.0.1:8080

## Lint, type-check, build the docs, start the brokers if needed, run the whole test suite.
test: install lint docs services browser
	$(BIN)/python -m pytest

## The documentation site (mkdocs-material) into site/; a broken link fails the build.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

services:
	scripts/ensure-services.sh
	scripts/ensure-nginx.sh
	scripts/ensure-prometheus.sh
	scripts/ensure-pstest.sh

## Chromium and playwright-core for the end-to-end browser tests.
browser:
	scripts/ensure-browser.sh

lint: install
	$(BIN)/ruff check service tests bench examples
	$(BIN)/ruff format --check service tests bench examples
	$(BIN)/mypy

## Side by side with nchan and sse-starlette (docs/performance.md): one table,
## also saved to bench/results/latest.json. Installs the peers when missing.
bench: install bench-peers
	$(BIN)/python -m bench.suite

bench-peers: install
	bench/ensure-peers.sh $(BIN)/python

## Single-server benchmarks: fan-out on memory://, then latency on each broker.
bench-brokers: install services
	$(BIN)/python -m bench.fanout --streams 1000 --messages 1000
	$(BIN)/python -m bench.brokers --broker memory://
	$(BIN)/python -m bench.brokers --broker nats://127.0.0.1:4222
	$(BIN)/python -m bench.brokers --broker amqp://guest:guest@127.0.0.1:5672/
	$(BIN)/python -m bench.brokers --broker kafka

clean:
	rm -rf $(VENV) build dist site *.egg-info .pytest_cache .mypy_cache .ruff_cache
