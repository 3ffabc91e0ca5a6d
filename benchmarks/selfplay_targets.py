"""How right self-play's training targets are, judged by the Connect 4 solver, by depth.

Usage:
    .venv/bin/python benchmarks/selfplay_targets.py --model PATH.onnx \\
        [--games 300] [--sims 100] [--temperature-moves 10] [--random-opening-plies 8] \\
        [--search-value-weight 0] [--td-steps 0] [--mcts-solver] [--root-search gumbel]

Plays one self-play shard with the loop's own code and settings, then values every
recorded position with the solver. Per depth band it prints one JSON line:

- value_sign_agrees: over the positions the solver rates won or lost, the value
  target's sign is the true result's. With AlphaZero's targets (weight 0, no TD
  steps) that is the game's result seen from the side to move.
- value_error: mean |target - v*|, v* the value perfect play from the position
  gives (+-discount^(plies to the solver's end of the game), 0 for a draw): the
  target the network would be fitted to if every later move were optimal.
- policy_top_optimal / policy_top_keeps_result: the most visited move (the policy
  target's peak) is solver-optimal / keeps the result.
- policy_mass_optimal: the share of the policy target on solver-optimal moves.

Why: when the network stops improving on a band of positions, this tells whether
the targets it is fitted to are any better there; more simulations or fewer sampled
plies only help if they make these numbers rise.
"""

import argparse
import json

import numpy as np
from solver_depth import BANDS

from cartridge.evaluators.onnx_model import OnnxEvaluator
from cartridge.games import load
from cartridge.selfplay.config import SelfPlayConfig
from cartridge.selfplay.play import play_selfplay
from cartridge.solvers import connect4_deciding_stone, connect4_values_from_planes

SELFPLAY_BANDS = (*BANDS, (25, 42))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="ONNX file of a Connect 4 network")
    parser.add_argument("--games", type=int, default=300)
    parser.add_argument("--sims", type=int, default=100)
    parser.add_argument("--temperature-moves", type=int, default=10)
    parser.add_argument("--random-opening-plies", type=int, default=8)
    parser.add_argument("--value-discount", type=float, default=0.97)
    parser.add_argument("--search-value-weight", type=float, default=0.0)
    parser.add_argument("--td-steps", type=int, default=0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--mcts-solver", action="store_true")
    parser.add_argument("--root-search", choices=("puct", "gumbel"), default="puct")
    args = parser.parse_args()
    game = load("connect4")
    config = SelfPlayConfig.for_game(
        game,
        args.games,
        args.sims,
        value_discount=args.value_discount,
        temperature_moves=args.temperature_moves,
        random_opening_plies=args.random_opening_plies,
        search_value_weight=args.search_value_weight,
        td_steps=args.td_steps,
        solver=args.mcts_solver,
        root_search=args.root_search,
    )
    shard = play_selfplay(game, OnnxEvaluator(game, args.model), config, seed=args.seed)
    meta = shard.metadata
    print(
        json.dumps(
            {
                "games": meta.games,
                "positions": meta.positions,
                "first_player_wins": meta.first_player_wins,
                "draws": meta.draws,
                "second_player_wins": meta.second_player_wins,
            }
        )
    )
    plies = shard.planes.reshape(len(shard.outcome), -1).sum(axis=1)
    for low, high in SELFPLAY_BANDS:
        band = np.flatnonzero((plies >= low) & (plies <= high))
        judged = [_judge(shard, i, plies[i], args.value_discount) for i in band]
        row = {"plies": f"{low}-{high}", "positions": len(judged)}
        for measure in judged[0] if judged else ():
            row[measure] = round(float(np.nanmean([j[measure] for j in judged])), 4)
        print(json.dumps(row))


def _judge(shard, index: int, ply: int, discount: float) -> dict[str, float]:
    values = connect4_values_from_planes(shard.planes[index])
    best = max(values.values())
    policy = shard.policy[index]
    top = int(np.argmax(policy))
    target = shard.outcome[index]
    stone = connect4_deciding_stone(ply, best)
    perfect = np.sign(best) * discount ** (stone - ply) if stone else 0.0
    return {
        "value_sign_agrees": np.sign(target) == np.sign(best) if best else np.nan,
        "value_error": abs(target - perfect),
        "policy_top_optimal": values[top] == best,
        "policy_top_keeps_result": np.sign(values[top]) == np.sign(best),
        "policy_mass_optimal": sum(policy[a] for a, value in values.items() if value == best),
    }


if __name__ == "__main__":
    main()
