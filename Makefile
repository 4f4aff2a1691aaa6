# The template repository's own checks. The generated project has its own Makefile.
#
#   make test       bake every named option combination and check the results (pytest tests)
#   make test-fast  the same without the tests marked slow
#   make demo       run tests/demo.py in the same environment
#   make lint       ruff over hooks/ and tests/
#   make clean      remove .venv and caches
#
# Only python3, pip and make are assumed: uv is installed with pip when it is not on PATH.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.requirements.stamp
PYTEST_ARGS ?=
# pytest-xdist workers; 0 runs everything in one process.
PYTEST_WORKERS ?= 2

# `python -m uv` works wherever pip put the package, even when its script folder is not on PATH.
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
# uv must never try to download a Python build: only package registries are reachable.
export UV_PYTHON_DOWNLOADS := never
export PIP_ROOT_USER_ACTION := ignore
# Bytecode caches matter here: every CLI call of a baked project imports MLflow and friends anew.
unexport PYTHONDONTWRITEBYTECODE
# Tests and the demo find the venv's tools (uv, cruft, ruff) on PATH, wherever pip put the bootstrap uv.
RUN := PATH="$(CURDIR)/$(VENV)/bin:$$PATH"

.PHONY: test test-fast demo lint clean uv

test: $(STAMP)
	$(RUN) $(VENV_PYTHON) -m pytest tests -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(RUN) $(VENV_PYTHON) -m pytest tests -m "not slow" -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

demo: $(STAMP)
	$(RUN) $(VENV_PYTHON) tests/demo.py

lint: $(STAMP)
	$(VENV)/bin/ruff check hooks tests
	$(VENV)/bin/ruff format --check hooks tests

uv:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || \
		$(PYTHON) -m pip install --quiet uv || $(PYTHON) -m pip install --quiet --user uv

# Rebuilt when the requirements change; a half-made venv leaves no stamp, so the next run retries.
$(STAMP): tests/requirements.txt | uv
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)
	$(UV) pip install --quiet --python $(VENV_PYTHON) -r tests/requirements.txt
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find hooks tests -type d -name __pycache__ -prune -exec rm -rf {} +
