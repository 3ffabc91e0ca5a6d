"""`cartridge bench mcts` and `cartridge bench selfplay`."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np

from cartridge.benchmarking.reference_puct import python_puct
from cartridge.evaluators import UniformEvaluator
from cartridge.evaluators.onnx_model import OnnxEvaluator
from cartridge.games import Game
from cartridge.mcts import BatchedMCTS, SearchConfig
from cartridge.selfplay import SelfPlayConfig, play_selfplay


def baseline_runs(repeats: int) -> int:
    """The Python baseline is slow and steady: half as many runs suffice."""
    return max(1, repeats // 2)


def bench_mcts(
    game: Game,
    simulations: int,
    trees: int = 64,
    repeats: int = 5,
    baseline_simulations: int = 2000,
    on_run_end: Callable[[int], None] | None = None,
    solver: bool = False,
    root_search: str = "puct",
) -> dict:
    """Simulations per second of the batched search from the start position, uniform
    evaluator, one thread; next to the dict-based Python PUCT measured in the same run.
    `solver` and `root_search` choose the search, to show what each costs."""
    evaluator = UniformEvaluator(game)
    start = game.new_initial_state()
    config = SearchConfig(solver=solver, root_search=root_search)
    rates = []
    for repeat in range(repeats):
        search = BatchedMCTS(game, trees, config, seed=repeat)
        for i in range(trees):
            search.reset(i, start)
        began = time.perf_counter()
        done = search.run(evaluator, simulations)
        rates.append(done / (time.perf_counter() - began))
        if on_run_end:
            on_run_end(len(rates))
    baseline_rates = []
    for _ in range(baseline_runs(repeats)):
        began = time.perf_counter()
        python_puct(start, baseline_simulations)
        baseline_rates.append(baseline_simulations / (time.perf_counter() - began))
        if on_run_end:
            on_run_end(len(rates) + len(baseline_rates))
    rate, baseline = statistics.median(rates), statistics.median(baseline_rates)
    return {
        "game": game.name,
        "simulations_per_tree": simulations,
        "trees": trees,
        "solver": solver,
        "root_search": root_search,
        "repeats": repeats,
        "sims_per_sec": round(rate),
        "sims_per_sec_runs": [round(r) for r in rates],
        "python_puct_sims_per_sec": round(baseline),
        "speedup_vs_python": round(rate / baseline, 1),
    }


class _TimedEvaluator:
    """Records every batch size and the time spent inside the wrapped evaluator."""

    def __init__(self, inner):
        self.inner = inner
        self.batch_sizes: list[int] = []
        self.seconds = 0.0

    def evaluate(self, planes):
        began = time.perf_counter()
        result = self.inner.evaluate(planes)
        self.seconds += time.perf_counter() - began
        self.batch_sizes.append(len(planes))
        return result


def bench_selfplay(
    game: Game,
    model_path: str,
    games: int = 256,
    simulations: int = 100,
    parallel_games: int = 64,
    threads: int = 1,
    seed: int = 0,
    on_game_end: Callable[[int], None] | None = None,
    solver: bool = False,
    root_search: str = "puct",
) -> dict:
    """Self-play positions evaluated per second against the network bound: the same
    ONNX model, run raw on real self-play positions with exactly the batch sizes
    self-play produced, in the same process. Their ratio is the share of self-play
    time that went to the network; search and game code take the rest."""
    timed = _TimedEvaluator(OnnxEvaluator(game, model_path, threads=threads))
    config = SelfPlayConfig.for_game(
        game,
        games,
        simulations,
        solver=solver,
        root_search=root_search,
        parallel_games=parallel_games,
    )
    began = time.perf_counter()
    shard = play_selfplay(game, timed, config, seed=seed, on_game_end=on_game_end)
    wall = time.perf_counter() - began
    positions = sum(timed.batch_sizes)

    raw = OnnxEvaluator(game, model_path, threads=threads)
    rng = np.random.default_rng(seed)
    pool = shard.planes[rng.integers(0, len(shard), parallel_games)].astype(np.float32)
    raw.evaluate(pool)  # warm-up: the first run allocates
    began = time.perf_counter()
    for size in timed.batch_sizes:
        raw.evaluate(pool[:size])
    raw_seconds = time.perf_counter() - began
    calls, began = 0, time.perf_counter()
    while calls < 20 or time.perf_counter() - began < 1.0:
        raw.evaluate(pool)
        calls += 1
    full_batch_rate = calls * parallel_games / (time.perf_counter() - began)
    return {
        "game": game.name,
        "model": str(model_path),
        "games": games,
        "simulations": simulations,
        "parallel_games": parallel_games,
        "solver": solver,
        "root_search": root_search,
        "onnx_threads": threads,
        "selfplay_positions_per_sec": round(positions / wall),
        "raw_onnxruntime_positions_per_sec": round(positions / raw_seconds),
        "ratio": round(raw_seconds / wall, 3),
        "mean_batch": round(positions / len(timed.batch_sizes), 1),
        "raw_full_batch_positions_per_sec": round(full_batch_rate),
        "evaluator_share_of_wall": round(timed.seconds / wall, 3),
        "wall_seconds": round(wall, 2),
    }
