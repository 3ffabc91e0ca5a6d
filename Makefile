# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(shell find src -name '*.pyx' -o -name '*.pxd')
STATE := .cartridge
# The manifest, Dockerfile and workflow checkers live in their own virtualenv (checkov
# alone brings ~100 dependencies); kubectl (with kustomize) comes from the system.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed
# The browser tests drive Debian's Chromium (Playwright's own browser download is not used).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint validate bench install clean

# Reinstalling on a .pyx/.pxd change recompiles the Cython extensions in place.
$(STAMP): $(SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

$(TOOLS_STAMP): requirements-validate.txt
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-validate.txt
	@touch $@

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks kfp_pipelines
	$(BIN)/ruff format --check src tests benchmarks kfp_pipelines

# Renders every overlay and runs the schema, removed-API, security and lint checks.
validate: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/cartridge validate --tools $(TOOLS)/bin

test: lint validate $(CHROMIUM)
	$(BIN)/python -m pytest

# The main job: start the local stack (S3 store, MLflow, Triton, web app) and run the Kubeflow pipeline
# locally on TicTacToe until the champion plays perfectly; the stack stays up.
demo: $(STAMP)
	$(BIN)/cartridge demo

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(TOOLS) build src/*.egg-info
	find src -name '*.so' -delete -o -name '*.c' -path '*/cartridge/*' -delete
