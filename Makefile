# launch-gateway: every target works on a fresh clone (it creates .venv and installs what it needs).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint proto proto-check proto-baseline unit e2e system-deps node-deps clean soak bench lock conformance

# Exact versions come from constraints.txt (pyproject.toml holds the ranges), so every clone installs the same.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

## lock: resolve the newest versions pyproject.toml's ranges allow, in a scratch venv, into constraints.txt
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet --upgrade pip
	.lock-venv/bin/pip install --quiet '.[dev]'
	{ sed -n '1,2p' constraints.txt; .lock-venv/bin/pip freeze --all --exclude launch-gateway; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .lock-venv

## demo: the gateway in front of the local Launch server; a sync, an async and a streaming call
demo: $(STAMP)
	$(BIN)/launch-gateway demo

## test: everything CI checks: lint, generated-code drift, the whole test suite
test: $(STAMP) node-deps system-deps
	$(MAKE) lint proto-check
	$(BIN)/pytest

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

examples/node/node_modules/.installed: examples/node/package.json examples/node/package-lock.json
	npm ci --prefix examples/node --no-audit --no-fund --silent
	touch $@

node-deps: node_modules/.installed examples/node/node_modules/.installed

## system-deps: Debian packages the tests drive (redis-server, prometheus, h2load, Go and Java gRPC toolchains); installed only when missing
system-deps:
	@./.ci/system-deps

lint: $(STAMP) node-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd protos && ../node_modules/.bin/buf lint
	cd protos && ../node_modules/.bin/buf breaking --against baseline.yaml

## proto-baseline: at a release, record the contract as released (protos/baseline.yaml); `make lint` then
## refuses every edit that would break a client built against it (buf.yaml's breaking rules, FILE)
proto-baseline: node-deps
	cd protos && ../node_modules/.bin/buf build --exclude-source-info -o baseline.yaml

## proto: regenerate launch_gateway/v1 from protos/
proto: $(STAMP)
	$(BIN)/python tools/proto.py

proto-check: $(STAMP)
	$(BIN)/python tools/proto.py --check

## bench: the gateway against its references (bare grpc.aio echo, the local Launch server); a table and bench/results/
bench: $(STAMP) system-deps
	$(BIN)/pip install --quiet 'py-spy==0.4.3'  # the profile section's sampler (a development tool, not a dependency)
	$(BIN)/python -m bench

## soak: 3 minutes of mixed traffic through a gateway in front of a failing local Launch server; checks invariants;
## then two replicas behind nginx sharing one Redis (limit exactness, task handles, a rolling restart; bench/rollout.py)
soak: $(STAMP) system-deps
	$(BIN)/python -m bench.soak --seconds 180 --concurrency 32
	$(BIN)/python -m bench.rollout --seconds 45 --clients 8

## conformance: the end-to-end tests against model-engine's real app, in a venv of its own (docs/conformance.md);
## MODEL_ENGINE_SRC=<an llm-engine checkout>, default the vendored copy beside the repository
conformance: $(STAMP)
	MODEL_ENGINE_SRC='$(MODEL_ENGINE_SRC)' $(BIN)/python -m tests.conformance.venv
	MODEL_ENGINE_SRC='$(MODEL_ENGINE_SRC)' $(BIN)/pytest tests/conformance

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache .cache .conformance
