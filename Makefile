# The two commands of the README, and their parts. Each target runs the idempotent set-up
# first; a second call skips everything already done.
PY := .venv/bin/python

.PHONY: demo test test-unit lint setup selfcheck lock serve

setup:
	@deploy/setup.sh

demo: setup
	$(PY) -m app.demo

selfcheck: setup
	$(PY) -m selftrain.selfcheck

# The suite's files on TEST_WORKERS processes (pytest-xdist; a file's tests stay together, in
# order, on one): its runs wait on servers and subprocesses about half the time. TEST_WORKERS=0
# runs it in one process.
TEST_WORKERS ?= 2

test: setup lint
	$(PY) -m pytest $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

# The fast loop: unit tests only (pure logic, no servers, no training), about a minute.
test-unit: setup
	$(PY) -m pytest tests/unit

# ruff (lint, import order, formatting) and mypy (strict on storage/), configured in pyproject.toml.
lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

lock: setup
	@deploy/lock.sh

# A local Prefect server + process worker on 127.0.0.1 with every deployment registered.
serve: setup
	@deploy/serve.sh
