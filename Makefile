# Two commands set everything up on a fresh machine (see README):
#   make demo   -- the TIMIT recipe end to end on the built-in synthetic corpus (or TIMIT=/path/to/TIMIT)
#   make test   -- the test suite (Triton kernels under the interpreter when there is no GPU)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kfrontend-installed
WORK ?= exp/demo
TIMIT ?=

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,recipes]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m recipes.timit demo --work $(WORK) $(if $(TIMIT),--timit $(TIMIT),)

test: $(STAMP)
	$(PY) -m pytest -q -ra

clean:
	rm -rf $(VENV) exp .pytest_cache
