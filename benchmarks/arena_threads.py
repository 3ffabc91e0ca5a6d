"""A gate match's wall time with one onnxruntime thread per player against every core.

Usage: .venv/bin/python benchmarks/arena_threads.py PLAYER1 PLAYER2 [--game connect4]
       [--games 60] [--sims 100] [--repeats 3]
PLAYER1/2 are arena specs (`model:PATH.onnx`, `models:/NAME/VERSION` with
MLFLOW_TRACKING_URI set). The two settings alternate, so drift on a shared machine
hits both; prints each match and the medians.
"""

import argparse
import statistics
import time

from cartridge.arena import make_player, play_match
from cartridge.cpus import available_cpus
from cartridge.games import load


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("player1")
    parser.add_argument("player2")
    parser.add_argument("--game", default="connect4")
    parser.add_argument("--games", type=int, default=60)
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    game = load(args.game)
    settings = sorted({1, available_cpus()})
    seconds: dict[int, list[float]] = {threads: [] for threads in settings}
    for _ in range(args.repeats):
        for threads in settings:
            first = make_player(args.player1, game, args.sims, seed=0, threads=threads)
            second = make_player(args.player2, game, args.sims, seed=1, threads=threads)
            began = time.perf_counter()
            match = play_match(game, first, second, args.games, seed=0)
            seconds[threads].append(time.perf_counter() - began)
            print(
                f"{threads} thread(s): {seconds[threads][-1]:.1f} s, "
                f"W-D-L {match.wins}-{match.draws}-{match.losses}",
                flush=True,
            )
    medians = {threads: statistics.median(times) for threads, times in seconds.items()}
    for threads, median in medians.items():
        print(f"median, {threads} thread(s): {median:.1f} s")
    if len(medians) == 2:
        print(f"speed-up: {medians[1] / medians[settings[-1]]:.2f}x")


if __name__ == "__main__":
    main()
