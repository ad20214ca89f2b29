# The two commands: `make demo` and `make test`. Both create the virtual environment when it is
# missing or older than pyproject.toml, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Offline CIFAR-10 beside the checkout when there is one, else ./data (torchvision downloads there).
DATA_DIR ?= $(if $(wildcard ../shared/data/cifar10-jpeg.zip),../shared/data,data)
DEMO_DIR ?= wno-runs/demo
PYTEST_ARGS ?=

.PHONY: venv test test-fast demo bench clean help

help:
	@echo "make demo   - run a small real ablation study end to end (SQLite + local MLflow) and write its report"
	@echo "make test   - run the whole test suite (PostgreSQL tests need WNO_TEST_POSTGRES_URL; see .ci/run)"
	@echo "make bench  - run the benchmarks and rewrite BENCHMARKS.md"

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,ui]'
	touch $(STAMP)

test: $(STAMP)
	WNO_TEST_DATA_DIR=$${WNO_TEST_DATA_DIR:-$(DATA_DIR)} $(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(PY) -m wno demo --data-dir $(DATA_DIR) --out $(DEMO_DIR)

bench: $(STAMP)
	WNO_DATA_DIR=$${WNO_DATA_DIR:-$(DATA_DIR)} $(PY) -m benchmarks.run --out BENCHMARKS.md

clean:
	rm -rf $(VENV) wno-runs .pytest_cache
