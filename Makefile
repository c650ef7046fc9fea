# Two commands: `make run` serves with the embedded defaults, `make test` runs the whole suite.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test bench clean

$(PY):
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (or set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[test,bench]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	DEV_MODE=$${DEV_MODE:-1} MALLOC_ARENA_MAX=$${MALLOC_ARENA_MAX:-2} OPENBLAS_NUM_THREADS=$${OPENBLAS_NUM_THREADS:-1} exec $(PY) run.py

test: $(STAMP_TEST)
	$(PY) -m pytest -ra $(PYTEST_ARGS)

bench: $(STAMP_TEST)
	$(PY) bench/voice_latency.py

clean:
	rm -rf $(VENV) var .pytest_cache
