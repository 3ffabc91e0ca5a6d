"""What reanalysis adds to a training step, by share of the batch and simulations.

Usage:
    .venv/bin/python benchmarks/reanalyse_cost.py --shard DIR [--blocks 3 --channels 32]
        [--batch-size 256] [--repeats 8]

Times `Reanalyser` on batches drawn from a Connect 4 replay shard against a plain
training step (forward, loss, backward, AdamW) of the same network on a batch of the
same size, alternating the two, and prints one JSON line per setting with the
medians. The ratio is what matters: how much longer each training step gets.
"""

import argparse
import json
import statistics
import time

import numpy as np
import torch

from cartridge.games import load
from cartridge.networks import NetworkConfig, build_network
from cartridge.replay import read_shard
from cartridge.training.losses import alphazero_loss
from cartridge.training.reanalyse import Reanalyser


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shard", required=True, help="a Connect 4 replay shard directory")
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=8)
    args = parser.parse_args()
    game = load("connect4")
    shard = read_shard(args.shard)
    planes = torch.from_numpy(shard.planes.astype(np.float32))
    policy, value = torch.from_numpy(shard.policy), torch.from_numpy(shard.outcome)
    network = NetworkConfig(kind="resnet", blocks=args.blocks, channels=args.channels)
    model = build_network(game, network).train()
    optimizer = torch.optim.AdamW(model.parameters(), 1e-3)
    rng = np.random.default_rng(0)

    def batch() -> torch.Tensor:
        return torch.from_numpy(rng.integers(0, len(planes), args.batch_size))

    def train_step() -> None:
        rows = batch()
        logits, values = model(planes[rows])
        loss, *_ = alphazero_loss(logits, values, policy[rows], value[rows], 1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    for fraction in (0.125, 0.25, 0.5):
        for simulations in (16, 32):
            reanalyse = Reanalyser(
                game,
                model,
                torch.device("cpu"),
                fraction=fraction,
                batch_size=args.batch_size,
                simulations=simulations,
                value_discount=shard.metadata.config["search"]["value_discount"],
            )
            searched, trained = [], []
            for _ in range(args.repeats):
                rows = batch()
                began = time.perf_counter()
                reanalyse(planes[rows], policy[rows], value[rows])
                searched.append(time.perf_counter() - began)
                began = time.perf_counter()
                train_step()
                trained.append(time.perf_counter() - began)
            search_ms = 1000 * statistics.median(searched)
            step_ms = 1000 * statistics.median(trained)
            print(
                json.dumps(
                    {
                        "fraction": fraction,
                        "positions": reanalyse.rows,
                        "simulations": simulations,
                        "reanalysis_ms": round(search_ms, 1),
                        "training_step_ms": round(step_ms, 1),
                        "step_slowdown": round((search_ms + step_ms) / step_ms, 2),
                    }
                )
            )


if __name__ == "__main__":
    main()
