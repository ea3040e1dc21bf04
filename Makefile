# One command each, set-up included: `make demo` runs the tiny-world job, `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup demo test test-unit clean

$(STAMP): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -c constraints-cpu.txt -e ".[dev]"
	touch $@

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/rcs-ray demo

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache outputs
