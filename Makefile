# Two commands set everything up on a fresh machine (see README):
#   make demo   -- the TIMIT recipe end to end on the built-in synthetic corpus (or TIMIT=/path/to/TIMIT)
#   make test   -- the test suite (Triton kernels under the interpreter when there is no GPU)
# Both install into .venv from the lock (requirements/lock.txt: exact versions, the newest set that
# passes).  Other targets:
#   make test-oldest  -- the suite on the oldest supported set (requirements/oldest.txt), in .venv-oldest
#   make fresh-check  -- `pip install .` alone in a throwaway venv: imports, and equals torchaudio
#   make lock         -- refresh the lock: resolve the newest set, run the suite on it, write the lock
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kfrontend-installed
LOCK := requirements/lock.txt
OLDEST := requirements/oldest.txt
WORK ?= exp/demo
TIMIT ?=
EXTRAS := test,recipes

.PHONY: demo test install test-oldest fresh-check lock clean

install: $(STAMP)

# -c: the lock constrains every package pip installs (pip itself included), so a fresh machine gets
# exactly the set CI tested.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade -c $(LOCK) pip
	$(PY) -m pip install --quiet -c $(LOCK) -e ".[$(EXTRAS)]"
	$(PY) -m pip check
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m recipes.timit demo --work $(WORK) $(if $(TIMIT),--timit $(TIMIT),)

test: $(STAMP)
	$(PY) -m pytest -q -ra

.venv-oldest/.kfrontend-installed: pyproject.toml $(OLDEST)
	test -x .venv-oldest/bin/python || $(PYTHON) -m venv .venv-oldest
	.venv-oldest/bin/python -m pip install --quiet --upgrade pip
	.venv-oldest/bin/python -m pip install --quiet -c $(OLDEST) -e ".[$(EXTRAS)]"
	.venv-oldest/bin/python -m pip check
	touch $@

test-oldest: .venv-oldest/.kfrontend-installed
	.venv-oldest/bin/python -m pytest -q -ra

fresh-check:
	bash tools/fresh_install_check.sh

# Resolve the newest set the declared ranges allow (no constraints), run the suite on it, and only
# then write it as the lock.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade pip
	.venv-lock/bin/python -m pip install --quiet -e ".[$(EXTRAS)]"
	.venv-lock/bin/python -m pip check
	.venv-lock/bin/python -m pytest -q -x
	( echo "# kfrontend lock: exact versions for make demo / make test / CI.  Refresh: make lock"; \
	  echo "# (resolved $$(date -u +%Y-%m-%d) with $$(.venv-lock/bin/python --version); see README)"; \
	  .venv-lock/bin/python -m pip freeze --all --exclude-editable | grep -iv '^kfrontend' ) > $(LOCK)
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) .venv-oldest .venv-lock exp .pytest_cache
