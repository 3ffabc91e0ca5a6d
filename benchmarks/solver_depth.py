"""Where a player's solver misses are: the fixed solver positions grouped by how many
random plies made them.

Usage:
    .venv/bin/python benchmarks/solver_depth.py --player model:PATH.onnx [--sims 100] \
        [--mcts-solver] [--root-search gumbel]
(or a registry URI with the stack's clients configured, `eval "$(cartridge stack env)"`)

Prints one JSON line a depth band: positions, solver-optimal and result-keeping
shares, as `cartridge arena --solver-positions` counts them; then the same two shares
over the set's distinct positions (the shallowest ones repeat: the empty board can
come up several times in a seeded draw); last, for the positions where the move was
not optimal, on which stone (of 42) perfect play from there ends the game, `draw`
when the best result is a draw. Misses on stones 39-42 are results that only the
last few moves of a full board decide.
"""

import argparse
import json
from collections import Counter

import numpy as np

from cartridge.arena.accuracy import judge_moves, solver_positions
from cartridge.arena.players import make_player
from cartridge.games import load
from cartridge.solvers import action_values, connect4_deciding_stone

BANDS = ((0, 4), (5, 8), (9, 14), (15, 24))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="connect4")
    parser.add_argument("--player", required=True)
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--positions", type=int, default=200)
    parser.add_argument("--mcts-solver", action="store_true")
    parser.add_argument("--root-search", choices=("puct", "gumbel"), default="puct")
    args = parser.parse_args()
    game = load(args.game)
    positions = solver_positions(game, args.positions)
    player = make_player(
        args.player, game, args.sims, solver=args.mcts_solver, root_search=args.root_search
    )
    optimal, keeps_result = judge_moves(player, positions)
    plies = np.array([state.ply for state in positions])
    for low, high in BANDS:
        band = (plies >= low) & (plies <= high)
        row = {"plies": f"{low}-{high}", "positions": int(band.sum())}
        if band.any():
            row |= {
                "solver_optimal": round(float(optimal[band].mean()), 4),
                "keeps_result": round(float(keeps_result[band].mean()), 4),
            }
        print(json.dumps(row))
    _, first = np.unique([str(state) for state in positions], return_index=True)
    distinct = np.zeros(len(positions), dtype=bool)
    distinct[first] = True
    print(
        json.dumps(
            {
                "distinct_positions": int(distinct.sum()),
                "solver_optimal": round(float(optimal[distinct].mean()), 4),
                "keeps_result": round(float(keeps_result[distinct].mean()), 4),
            }
        )
    )

    stones = Counter()
    for state, hit in zip(positions, optimal, strict=True):
        if not hit:
            stone = connect4_deciding_stone(state.ply, max(action_values(state).values()))
            stones[str(stone) if stone else "draw"] += 1
    print(json.dumps({"misses_by_deciding_stone": dict(sorted(stones.items()))}))


if __name__ == "__main__":
    main()
