# The whole set-up is `make dev` or `make test` on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NODE_STAMP := tests/node/node_modules/.installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: dev test lint typecheck pytest install node chromium clean bench layers proto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(NODE_STAMP): tests/node/package.json tests/node/package-lock.json
	cd tests/node && npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

node: $(NODE_STAMP)

dev: install
	$(BIN)/tidings dev

lint: install
	$(BIN)/ruff check src tests bench

typecheck: install
	$(BIN)/mypy

# The dashboard's browser tests drive Debian's chromium (Playwright cannot download its own here).
chromium:
	test -x /usr/bin/chromium || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

pytest: install node chromium
	$(BIN)/pytest

test: lint typecheck pytest

# The layers of src/tidings and every import that points up one or closes a circle.
layers:
	$(PYTHON) -m tests.tools.imports

# `make bench` runs P1-P9; `make bench BENCH="p3 p5"` runs the ones named (bench/README.md).
bench: install
	command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk; }
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python -m bench $(BENCH)

# Connect's protobuf messages: wire_pb2.py(i) are generated from wire.proto and checked in.
proto: install
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src \
		src/tidings/connect/wire.proto

clean:
	rm -rf $(VENV) tests/node/node_modules .pytest_cache .mypy_cache .ruff_cache artifacts
