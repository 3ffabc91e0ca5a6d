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
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	@mkdir -p $(STATE)/demo
	$(BIN)/cartridge selfplay --game tictactoe --games 256 --sims 200 --seed 1 \
		--out $(STATE)/demo/shard-$$(date +%Y%m%d-%H%M%S)
	$(BIN)/cartridge arena --game tictactoe --player1 mcts --player2 random --games 20 --sims 400
	$(BIN)/cartridge arena --game tictactoe --player1 mcts --player2 perfect --games 20 --sims 2000
	$(BIN)/cartridge arena --game connect4 --player1 mcts:rollout --player2 random --games 10 --sims 400
	@echo "Replay shards are under $(STATE)/demo; inspect one with: $(BIN)/cartridge shard inspect DIR"

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) build src/*.egg-info
	find src -name '*.so' -delete -o -name '*.c' -path '*/cartridge/*' -delete
