# The two commands a new user needs: `make run` and `make test`. Everything else goes through `hub`.
PYTHON ?= python3
VENV   := .venv
HUB    := $(VENV)/bin/hub

.PHONY: run test test-unit test-integration test-e2e soak bench docs clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

run: $(VENV)/.installed
	$(HUB) run

# Two workers, one test file at a time each: the tests mostly wait (group joins, polls), and a file's
# tests share fixtures in file order (the e2e stack).
test: $(VENV)/.installed
	$(VENV)/bin/pytest -q -n 2 --dist loadfile

test-unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests/unit

test-integration: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests/integration

test-e2e: $(VENV)/.installed
	$(VENV)/bin/pytest -q tests/e2e

# The fault drill (kill -9 of every service, the broker lost, Postgres restarted) in rounds for
# SOAK_MINUTES (0: one round), with the simulated chain at twice the rate.
SOAK_MINUTES ?= 30
soak: $(VENV)/.installed
	HUB_SOAK_MINUTES=$(SOAK_MINUTES) $(VENV)/bin/pytest -q -s tests/e2e/test_faults.py

# The end-to-end benchmark: writes bench/results.json and the README's table (a few minutes).
bench: $(VENV)/.installed
	$(HUB) bench

docs: $(VENV)/.installed
	$(HUB) docs

clean:
	rm -rf .hub
