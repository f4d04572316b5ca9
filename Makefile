# The one entry point for humans and CI.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
APP_STAMP := $(VENV)/.installed-learnfeed
PROTOS := $(shell find proto -name '*.proto')

.PHONY: up test chaos lint typecheck proto proto-check unit integration e2e bench image clean

# The platform and learnfeed for `make up`; with the dev tools for everything else.
$(APP_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[learnfeed]'
	touch $(APP_STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP) $(APP_STAMP)

## make up: start the learnfeed cell in the foreground with demo data; Ctrl-C drains it.
up: $(APP_STAMP)
	$(BIN)/cellwork up learnfeed --demo

## make test: install the deployment tests' tools, lint, type-check, check generated stubs,
## run the whole suite (every skip is listed with its reason; with CI=true a skip fails it).
test: $(STAMP) test-tools proto-check lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider --ignore=tests/chaos

## make chaos: the fault-injection suite (tests/chaos): real cells under open-loop load,
## NATS killed and wiped, instances killed mid-commit, dependencies down, poison events.
## Prints what each scenario measured (README's Resilience table). CI runs it after `make test`.
chaos: $(STAMP) test-tools
	$(BIN)/pytest -p no:cacheprovider -rA tests/chaos

## make test-tools: install the Debian packages tests/deploy uses, or say which are missing.
.PHONY: test-tools
test-tools:
	tests/tools.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

## make typecheck: mypy --strict on both packages, and the calls that must not type-check.
typecheck: $(STAMP)
	$(BIN)/mypy src/cellwork src/learnfeed tests/typecheck

## make proto: regenerate the Python stubs from proto/ (the source of truth).
proto: $(STAMP)
	$(PY) -m cellwork.rpc.protogen proto src

proto-check: $(STAMP)
	$(PY) -m cellwork.rpc.protogen proto src --check

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit
integration: $(STAMP)
	$(BIN)/pytest -q tests/integration
e2e: $(STAMP)
	$(BIN)/pytest -q tests/e2e

## make image: build the one image of every service with docker, or podman where docker has no engine.
IMAGE ?= cellwork:dev
ENGINE ?= $(shell docker info >/dev/null 2>&1 && echo docker || (command -v podman >/dev/null && echo podman) || echo docker)
image:
	$(ENGINE) build -f deploy/docker/Dockerfile -t $(IMAGE) $(IMAGE_ARGS) .

bench: $(STAMP)
	$(PY) bench/rpc.py

clean:
	rm -rf $(VENV) .cellwork .mypy_cache .ruff_cache
