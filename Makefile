# Two commands matter: `make demo` (whole pipeline on generated demo data) and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fatlib-installed
DEMO := demo

.PHONY: venv test lint demo benchmark clean

venv: $(STAMP)

# Reinstalls only when the dependency files change, so a re-run takes seconds.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	# PYTHONWARNINGS: setuptools' build backend prints a 10-line banner about editable installs.
	PYTHONWARNINGS=ignore $(VENV)/bin/pip install --quiet --constraint constraints.txt \
		--editable '.[dev]'
	touch $(STAMP)

# ruff, then the floors of docs/ARCHITECTURE.md (import-linter contracts in pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check fatlib jobs tests
	$(VENV)/bin/lint-imports

# Two pytest workers (pytest-xdist), one module at a time each (tests/conftest.py): the suite is
# mostly Ray starting processes, and one stream of tests left a core idle a third of the time.
test: lint
	$(PY) -m pytest -q --durations=12 -n 2

# The whole pipeline on fresh demo data: generate -> preprocess -> train -> infer. One model
# (--no-self-train) keeps it minutes: the default's self-training is ~5x that (README).
demo: venv
	$(PY) jobs/make_demo_data.py --out $(DEMO)/data --overwrite
	$(PY) jobs/preprocess.py --data $(DEMO)/data --out $(DEMO)/features --overwrite
	rm -rf $(DEMO)/run
	$(PY) jobs/train.py --features $(DEMO)/features --out $(DEMO)/run --epochs 8 --batch-size 16 \
		--no-self-train
	$(PY) jobs/infer.py --model $(DEMO)/run --data $(DEMO)/data --out $(DEMO)/predictions \
		--run-id demo

benchmark: venv
	$(PY) jobs/benchmark.py features

clean:
	rm -rf $(VENV) $(DEMO) .pytest_cache .ruff_cache .import_linter_cache
