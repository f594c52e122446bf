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

test: setup lint
	$(PY) -m pytest

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
