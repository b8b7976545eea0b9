# Two set-up commands, each works alone on a fresh machine:
#   make demo   creates .venv, installs the package (no test extras), runs the main job on the
#               built-in synthetic data
#   make test   creates .venv, installs the package with the test extras, runs all tests
#   (make test-fast skips the slow modules: an edit loop, not a substitute)
# `make install` / `make install-test` do only the installing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
DEMO_WORKDIR ?= demo_workdir
# pytest-xdist workers of `make test` (most of a test is a single-threaded XLA compile).
TEST_WORKERS ?= 2

.PHONY: demo test test-fast install install-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q -e .
	touch $(STAMP)

# The test extras: pytest, chex, and torch, safetensors, h5py (the `convert` extra).
$(TEST_STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP) $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

demo: $(STAMP)
	$(PY) -m flax_gradnet.demo --workdir=$(DEMO_WORKDIR)

test: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

# The edit loop: everything but the modules conftest.SLOW_MODULES marks slow
# (training and end-to-end tool runs); CI runs `make test`.
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) $(DEMO_WORKDIR)
