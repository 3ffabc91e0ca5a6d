"""How much registered networks memorise: losses on positions they trained on against
positions played after them, which they never saw.

Usage (with the stack's clients configured, `eval "$(cartridge stack env)"`):
    .venv/bin/python benchmarks/seen_unseen.py --game connect4 --versions 38,45 [--ahead 3]

For each version: its training run's window is the seen part; the shards that the
next --ahead versions' runs added to their windows are the unseen part (positions the
loop played afterwards). Both are measured with the trainer's own check
(`cartridge.training.heldout`, the metrics a run logs at step 0), on the version's
final weights. Works for models trained before checkpoints listed their shards: the
lists come from each run's `inputs/shards.json`.
"""

import argparse
import json
import os
import tempfile
from pathlib import Path

import mlflow
import torch

from cartridge.games import load
from cartridge.loop import checkpoint_of
from cartridge.names import registered_model_name
from cartridge.networks import NetworkConfig, build_network
from cartridge.tracking import use_tracking
from cartridge.training import checkpoint
from cartridge.training.data import load_replay
from cartridge.training.heldout import starting_losses


def trained_shards(client, game_name: str, version: int) -> list[str]:
    model = client.get_model_version(registered_model_name(game_name), str(version))
    run_id = model.tags.get("run_id") or model.run_id
    return mlflow.artifacts.load_dict(f"runs:/{run_id}/inputs/shards.json")["shards"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="connect4")
    parser.add_argument("--versions", required=True, help="comma-separated version numbers")
    parser.add_argument("--ahead", type=int, default=3)
    args = parser.parse_args()
    game = load(args.game)
    client = use_tracking(os.environ.get("MLFLOW_TRACKING_URI", ""))
    for version in (int(v) for v in args.versions.split(",")):
        seen = trained_shards(client, args.game, version)
        later = [trained_shards(client, args.game, version + k) for k in range(1, args.ahead + 1)]
        unseen = sorted({shard for shards in later for shard in shards} - set(seen))
        with tempfile.TemporaryDirectory() as workdir:
            saved = checkpoint.load(checkpoint_of(args.game, str(version), Path(workdir)))
        network = build_network(game, NetworkConfig.model_validate(saved["network"]))
        network.load_state_dict(saved["model"])
        data = load_replay(seen + unseen, args.game)
        losses = starting_losses(network, data, set(seen), torch.device("cpu"))
        print(
            json.dumps(
                {"version": version, "seen_shards": len(seen), "unseen_shards": len(unseen)}
                | {k: round(v, 4) for k, v in losses.items()}
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
