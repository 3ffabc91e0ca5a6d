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
# The browser tests' Chromium, one setting for make and the tests: CARTRIDGE_CHROMIUM
# if given, else one already installed (Debian's chromium, or the Google Chrome of
# GitHub's ubuntu runners, where `apt-get install chromium` is only a snap wrapper),
# else Debian's chromium package, installed below.
CARTRIDGE_CHROMIUM ?= $(firstword $(wildcard /usr/bin/chromium /usr/bin/google-chrome) /usr/bin/chromium)
export CARTRIDGE_CHROMIUM
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint validate bench install clean lock

PIP := $(BIN)/python -m pip --disable-pip-version-check
# torch's pin, read from pyproject.toml: the CPU build is installed on its own (the lock
# files leave torch out, since its CPU and CUDA builds are different files).
TORCH := $(shell grep -o '"torch==[^"]*"' pyproject.toml | tr -d '"')
LOCK_TOOLS := .venv-lock

# Reproducible installs: every dependency but torch comes from requirements-dev.lock
# (pip-compile output, pinned with hashes; `make lock` regenerates both lock files from
# pyproject.toml), then the package itself without resolving anything more. Reinstalling
# on a .pyx/.pxd change recompiles the Cython extensions in place.
$(STAMP): $(SOURCES) requirements-dev.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --require-hashes -r requirements-dev.lock
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet --no-deps -e '.[dev,stack]'
	$(PIP) check
	@touch $@

install: $(STAMP)

$(TOOLS_STAMP): requirements-validate.txt
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-validate.txt
	@touch $@

$(CARTRIDGE_CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks kfp_pipelines
	$(BIN)/ruff format --check src tests benchmarks kfp_pipelines

# Renders every overlay and runs the schema, removed-API, security and lint checks.
validate: $(STAMP) $(TOOLS_STAMP)
	$(BIN)/cartridge validate --tools $(TOOLS)/bin

test: lint validate $(CARTRIDGE_CHROMIUM)
	$(BIN)/python -m pytest

# The main job: start the local stack (S3 store, MLflow, Triton, web app) and run the Kubeflow pipeline
# locally on TicTacToe until the champion plays perfectly; the stack stays up.
demo: $(STAMP)
	$(BIN)/cartridge demo

# Regenerate the lock files after changing a pin in pyproject.toml (Dependabot does the
# same for its updates): requirements.lock for the images, requirements-dev.lock with the
# dev and stack extras for make.
lock:
	@test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && \
		$(LOCK_TOOLS)/bin/python -m pip install --quiet pip-tools==7.7.0; }
	$(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --unsafe-package torch \
		--strip-extras --no-emit-index-url --no-emit-find-links \
		--output-file requirements.lock pyproject.toml
	$(LOCK_TOOLS)/bin/pip-compile --quiet --generate-hashes --unsafe-package torch \
		--strip-extras --no-emit-index-url --no-emit-find-links --extra dev --extra stack \
		--output-file requirements-dev.lock pyproject.toml

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) $(TOOLS) $(LOCK_TOOLS) build src/*.egg-info
	find src -name '*.so' -delete -o -name '*.c' -path '*/cartridge/*' -delete
