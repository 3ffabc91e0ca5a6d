"""Connect 4 strength per hour of training on this machine: pipeline runs back to back.

Usage: .venv/bin/python benchmarks/connect4_strength.py --minutes 120 [--home .cartridge-c4]
       [--blocks 5 --channels 64] [--sims 50] [--iterations 2] [--games-per-shard 64]
       [--train-steps 400] [--window 4] [--arena-games 20] [--threshold 0.55]
       [--value-discount 1.0] [--full-search-fraction 1.0 --fast-sims 0] [--eval-sims N]
       [--search-value-weight 0] [--train-from latest|champion] [--gate-solver-z 0]
       [--random-opening-plies 0] [--td-steps 0] [--mcts-solver] [--root-search puct|gumbel]
       [--reanalyse-fraction 0 --reanalyse-sims 32]
Starts its own local stack under --home (ports from CARTRIDGE_S3_PORT/MLFLOW_PORT or
9100/5100), runs `cartridge pipeline run --local` on Connect 4 repeatedly, and after each
run measures the champion: the share of solver-optimal moves on the fixed position set
and the score against the `perfect` solver player, both at --eval-sims (default --sims;
the gate uses it too), so runs with different self-play searches compare fairly. One
JSON line per measurement is appended to <home>/connect4-strength.jsonl. Runs share one
replay window (the game's last --window iterations, whichever run played them), so
chaining runs loses no data, and calling it again on the same home carries on (seeds and
logs continue where the last call stopped). Run it from the repository root (the
pipeline definition is imported from there).
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

CLI = [sys.executable, "-m", "cartridge"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=120)
    parser.add_argument("--home", default=".cartridge-c4")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--sims", type=int, default=50)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--games-per-shard", type=int, default=64)
    parser.add_argument("--train-steps", type=int, default=400)
    parser.add_argument("--window", type=int, default=4)
    parser.add_argument("--arena-games", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.55)
    parser.add_argument("--value-discount", type=float, default=1.0)
    parser.add_argument("--full-search-fraction", type=float, default=1.0)
    parser.add_argument("--fast-sims", type=int, default=0)
    parser.add_argument("--eval-sims", type=int, default=None)
    parser.add_argument("--search-value-weight", type=float, default=0.0)
    parser.add_argument("--train-from", choices=("latest", "champion"), default="latest")
    parser.add_argument("--gate-solver-z", type=float, default=0.0)
    parser.add_argument("--random-opening-plies", type=int, default=0)
    parser.add_argument("--td-steps", type=int, default=0)
    parser.add_argument("--mcts-solver", action="store_true")
    parser.add_argument("--root-search", choices=("puct", "gumbel"), default="puct")
    parser.add_argument("--reanalyse-fraction", type=float, default=0.0)
    parser.add_argument("--reanalyse-sims", type=int, default=32)
    args = parser.parse_args()
    eval_sims = args.eval_sims or args.sims
    os.environ["CARTRIDGE_HOME"] = args.home
    os.environ.setdefault("CARTRIDGE_S3_PORT", "9100")
    os.environ.setdefault("CARTRIDGE_MLFLOW_PORT", "5100")
    subprocess.run([*CLI, "stack", "up"], check=True, stdout=subprocess.DEVNULL)
    results = Path(args.home) / "connect4-strength.jsonl"
    began = time.monotonic()
    # Carrying on in the same home continues the count, so no seed or log repeats.
    run = len(list(Path(args.home).glob("pipeline-*.log")))
    while time.monotonic() - began < args.minutes * 60:
        run += 1
        log = Path(args.home) / f"pipeline-{run}.log"
        with open(log, "w") as handle:
            subprocess.run(
                [
                    *CLI,
                    "pipeline",
                    "run",
                    "--local",
                    "--game",
                    "connect4",
                    "--iterations",
                    str(args.iterations),
                    "--shards",
                    "2",
                    "--games-per-shard",
                    str(args.games_per_shard),
                    "--sims",
                    str(args.sims),
                    "--train-steps",
                    str(args.train_steps),
                    "--window",
                    str(args.window),
                    "--threshold",
                    str(args.threshold),
                    "--batch-size",
                    "256",
                    "--arena-games",
                    str(args.arena_games),
                    "--arena-sims",
                    str(eval_sims),
                    "--seed",
                    str(run),
                    "--blocks",
                    str(args.blocks),
                    "--channels",
                    str(args.channels),
                    "--value-discount",
                    str(args.value_discount),
                    "--full-search-fraction",
                    str(args.full_search_fraction),
                    "--fast-sims",
                    str(args.fast_sims),
                    "--search-value-weight",
                    str(args.search_value_weight),
                    "--train-from",
                    args.train_from,
                    "--gate-solver-z",
                    str(args.gate_solver_z),
                    "--random-opening-plies",
                    str(args.random_opening_plies),
                    "--td-steps",
                    str(args.td_steps),
                    "--mcts-solver" if args.mcts_solver else "--no-mcts-solver",
                    "--root-search",
                    args.root_search,
                    "--reanalyse-fraction",
                    str(args.reanalyse_fraction),
                    "--reanalyse-simulations",
                    str(args.reanalyse_sims),
                ],
                check=True,
                stdout=handle,
                stderr=subprocess.STDOUT,
            )
        arena = subprocess.run(
            [
                *CLI,
                "arena",
                "--game",
                "connect4",
                "--player1",
                "models:/cartridge-connect4@champion",
                "--player2",
                "perfect",
                "--games",
                "10",
                "--sims",
                str(eval_sims),
                "--solver-positions",
                "200",
                "--json",
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        report = json.loads(arena.stdout.strip().splitlines()[-1])
        line = {
            "minutes": round((time.monotonic() - began) / 60, 1),
            "pipeline_runs": run,
            "network": f"{args.blocks}x{args.channels}",
            "iterations": run * args.iterations,
            "sims": args.sims,
            "eval_sims": eval_sims,
            "value_discount": args.value_discount,
            "full_search_fraction": args.full_search_fraction,
            "fast_sims": args.fast_sims,
            "search_value_weight": args.search_value_weight,
            "train_from": args.train_from,
            "gate_solver_z": args.gate_solver_z,
            "random_opening_plies": args.random_opening_plies,
            "td_steps": args.td_steps,
            "mcts_solver": args.mcts_solver,
            "root_search": args.root_search,
            "reanalyse_fraction": args.reanalyse_fraction,
            "reanalyse_sims": args.reanalyse_sims,
            "solver_optimal_fraction": report["solver_optimal_fraction"],
            "solver_result_fraction": report["solver_result_fraction"],
            "score_vs_perfect": report["score"],
            "wins": report["wins"],
            "draws": report["draws"],
            "losses": report["losses"],
        }
        with open(results, "a") as handle:
            handle.write(json.dumps(line) + "\n")
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
