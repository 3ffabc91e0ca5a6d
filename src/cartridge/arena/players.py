"""Arena players. Each chooses moves for a batch of games at once.

A batch interface lets a network-backed player search every game it is to move
in with one `BatchedMCTS` and one evaluator call per step, the same way
self-play does.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

import numpy as np

from cartridge.cpus import available_cpus
from cartridge.evaluators import Evaluator, RolloutEvaluator, UniformEvaluator
from cartridge.games import Game, State
from cartridge.mcts import BatchedMCTS, SearchConfig
from cartridge.solvers import optimal_actions, require_solver


class Player(Protocol):
    name: str

    def choose(self, states: list[State]) -> list[int]: ...


class RandomPlayer:
    """Uniformly random legal moves."""

    def __init__(self, seed: int = 0):
        self.name = "random"
        self._rng = np.random.default_rng(seed)

    def choose(self, states: list[State]) -> list[int]:
        return [int(self._rng.choice(s.legal_actions())) for s in states]


class PerfectPlayer:
    """Exact play (TicTacToe minimax, the bitbully solver for Connect 4), random among
    equally good moves."""

    def __init__(self, game: Game, seed: int = 0):
        require_solver(game.name, "the perfect player")
        self.name = "perfect"
        self._rng = np.random.default_rng(seed)

    def choose(self, states: list[State]) -> list[int]:
        return [int(self._rng.choice(optimal_actions(s))) for s in states]


class SearchPlayer:
    """PUCT search with a leaf evaluator; plays the most visited move, no noise."""

    def __init__(
        self,
        name: str,
        game: Game,
        evaluator: Evaluator,
        simulations: int,
        config: SearchConfig | None = None,
        seed: int = 0,
    ):
        self.name = name
        self.game = game
        self.evaluator = evaluator
        self.simulations = simulations
        self.config = config or SearchConfig()
        self.seed = seed
        self._search: BatchedMCTS | None = None

    def reseeded(self, seed: int) -> SearchPlayer:
        """The same network and search from a fresh random stream: ties then break
        alike however many moves this player has already chosen."""
        return SearchPlayer(
            self.name, self.game, self.evaluator, self.simulations, self.config, seed
        )

    def choose(self, states: list[State]) -> list[int]:
        if self._search is None or self._search.num_trees < len(states):
            self._search = BatchedMCTS(self.game, len(states), self.config, seed=self.seed)
        active = np.zeros(self._search.num_trees, dtype=bool)
        active[: len(states)] = True
        for i, state in enumerate(states):
            self._search.reset(i, state)
        self._search.run(self.evaluator, self.simulations, active)
        return [self._search.select_action(i, temperature=0.0) for i in range(len(states))]


def make_player(
    spec: str,
    game: Game,
    simulations: int,
    seed: int = 0,
    threads: int | None = None,
    *,
    solver: bool = False,
    root_search: str = "puct",
) -> Player:
    """`random`, `perfect`, `mcts` (uniform evaluator), `mcts:rollout`, `model:PATH.onnx`
    or a registry URI `models:/NAME@ALIAS` (network + search).

    A network player's onnxruntime uses `threads` threads, by default every core this
    process may use (`available_cpus`): the two players of a match take turns, so each
    can have them all. Self-play builds its own evaluators, one thread per shard.
    `solver` and `root_search` choose the search of the search players; a Gumbel root
    plays without Gumbel noise (the arena's random openings vary the games).
    """
    if spec == "random":
        return RandomPlayer(seed)
    if spec == "perfect":
        return PerfectPlayer(game, seed)
    search = {"solver": solver, "root_search": root_search, "gumbel_scale": 0.0}
    if spec == "mcts":
        return SearchPlayer(
            spec, game, UniformEvaluator(game), simulations, SearchConfig(**search), seed=seed
        )
    if spec == "mcts:rollout":
        evaluator = RolloutEvaluator(game, seed=seed)
        return SearchPlayer(spec, game, evaluator, simulations, SearchConfig(**search), seed=seed)
    if spec.startswith(("model:", "models:/")):
        evaluator = _network_evaluator(spec, game, threads or available_cpus())
        # Back up values the way the network learned them (see OnnxEvaluator).
        config = SearchConfig(value_discount=evaluator.value_discount, **search)
        return SearchPlayer(spec, game, evaluator, simulations, config, seed=seed)
    raise ValueError(
        f"unknown player {spec!r}: use random, perfect, mcts, mcts:rollout, model:PATH.onnx "
        "or models:/NAME@ALIAS"
    )


def _network_evaluator(spec: str, game: Game, threads: int):
    """An evaluator for `model:PATH.onnx` or a registry URI such as
    `models:/cartridge-connect4@champion`.

    A registry download is deleted as soon as onnxruntime holds the model in memory:
    the gate builds two such players every iteration, and their files would otherwise
    pile up in the temporary directory for as long as the loop runs."""
    from cartridge.evaluators.onnx_model import OnnxEvaluator

    if spec.startswith("model:"):
        return OnnxEvaluator(game, spec.removeprefix("model:"), threads=threads)
    from cartridge.tracking import fetch_onnx

    with tempfile.TemporaryDirectory(prefix="cartridge-model-") as directory:
        return OnnxEvaluator(game, fetch_onnx(spec, Path(directory)), threads=threads)
