# The two commands of the README, and their parts. Each target runs the idempotent set-up
# first; a second call skips everything already done.
PY := .venv/bin/python

.PHONY: demo test setup selfcheck lock serve

setup:
	@deploy/setup.sh

demo: setup
	$(PY) -m selftrain.demo

selfcheck: setup
	$(PY) -m selftrain.selfcheck

test: setup
	$(PY) -m pytest

lock: setup
	@deploy/lock.sh

# A local Prefect server + process worker on 127.0.0.1 with every deployment registered.
serve: setup
	@deploy/serve.sh
