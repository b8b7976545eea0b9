# Two set-up commands, each works alone on a fresh machine:
#   make demo   creates .venv, installs, runs the main job on the built-in synthetic data
#   make test   creates .venv, installs (with test extras), runs all tests
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_WORKDIR ?= demo_workdir

.PHONY: demo test install clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) setup.cfg pyproject.toml
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m flax_gradnet.demo --workdir=$(DEMO_WORKDIR)

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) $(DEMO_WORKDIR)
