# `make demo` and `make test` are the whole set-up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= demo_out

.PHONY: demo test install clean-demo

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

# The tests also cover the Apache Beam runner, an optional extra for users.
$(VENV)/.installed-beam: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[test,beam]'
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	PYTHON=$(PY) DEMO_DIR=$(DEMO_DIR) bash scripts/demo.sh

test: $(VENV)/.installed-beam
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -n auto --maxprocesses=4 --dist loadfile tests

clean-demo:
	rm -rf $(DEMO_DIR)
