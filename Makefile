# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml setup.py $(shell find src -name '*.pyx' -o -name '*.pxd')
STATE := .cartridge

.PHONY: demo test lint bench install clean

# Reinstalling on a .pyx/.pxd change recompiles the Cython extensions in place.
$(STAMP): $(SOURCES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks kfp_pipelines
	$(BIN)/ruff format --check src tests benchmarks kfp_pipelines

test: lint
	$(BIN)/python -m pytest

# The main job until the pipeline lands: stack up, self-play into S3, train and register
# a challenger in MLflow, then let it play. The stack stays up afterwards.
demo: $(STAMP)
	$(BIN)/cartridge stack up
	@set -e; run=demo-$$(date +%Y%m%d-%H%M%S); \
	shard=s3://cartridge/replay/tictactoe/$$run/iter-000001/shard-000; \
	$(BIN)/cartridge selfplay --game tictactoe --games 512 --sims 200 --seed 1 --out $$shard; \
	$(BIN)/cartridge train --game tictactoe --shard $$shard --steps 800 --batch-size 256 --iteration 1; \
	$(BIN)/cartridge arena --game tictactoe --player1 models:/cartridge-tictactoe@challenger \
		--player2 random --games 40 --sims 200; \
	$(BIN)/cartridge arena --game tictactoe --player1 models:/cartridge-tictactoe@challenger \
		--player2 perfect --games 40 --sims 200; \
	$(BIN)/cartridge arena --game tictactoe --player1 mcts --player2 perfect --games 20 --sims 2000; \
	$(BIN)/cartridge stack status; \
	echo; echo "MLflow UI (runs, metrics, model registry): $$($(BIN)/cartridge stack env | sed -n 's/^export MLFLOW_TRACKING_URI=//p')"; \
	echo "Replay shard: $$shard"; \
	echo "Stop the stack with: $(BIN)/cartridge stack down"

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info
	find src -name '*.so' -delete -o -name '*.c' -path '*/cartridge/*' -delete
