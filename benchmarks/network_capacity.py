"""Does a bigger network learn more from the same games? Networks of several sizes,
each trained from scratch by the real trainer on one fixed replay, measured on the
positions that later champions played (which none of them saw).

Usage (a GPU makes this minutes; --replay is a directory or s3:// prefix holding
shards at any depth, e.g. `s3://<bucket>/replay/connect4` with the stack's clients
configured, `eval "$(cartridge stack env)"`):
    python benchmarks/network_capacity.py --replay DIR --holdout-from 43 \
        --networks 5x64,10x64,6x96 --steps 5000 --batch-size 512 --out DIR
then the solver share of each exported network with search, on this machine:
    .venv/bin/cartridge arena --game connect4 --player1 model:DIR/5x64-5000.onnx \
        --player2 perfect --games 2 --sims 100 --solver-positions 200 --json

Shards whose self-play champion is version --holdout-from or later form the unseen
part; all earlier ones (and those of the uniform starting player) are trained on, or
with --trained-from N only those of champions N and later (a smaller, newer window).
One JSON line a network: training time, then the trainer's own seen/unseen check
(`cartridge.training.heldout`) on the final weights. A network that learns more
from the same data shows a lower unseen value and policy loss; a large seen/unseen
gap says it memorised instead.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from cartridge import storage
from cartridge.games import load
from cartridge.loop import champion_version
from cartridge.networks import NetworkConfig, build_network, export_onnx
from cartridge.replay import METADATA_FILE, read_metadata
from cartridge.training import TrainConfig, checkpoint, train
from cartridge.training.data import load_replay
from cartridge.training.heldout import starting_losses
from cartridge.training.trainer import select_device


def played_by(game_name: str, model: str) -> int:
    """The champion version a shard's games were played by; 0 for the uniform player."""
    version = champion_version(game_name, model)
    return int(version) if version.isdigit() else 0


def split_replay(
    root: Path, game_name: str, holdout_from: int, trained_from: int = 0
) -> tuple[list[str], list[str]]:
    trained, unseen = [], []
    for metadata_path in sorted(root.rglob(METADATA_FILE)):
        metadata = read_metadata(metadata_path.parent)
        if metadata.game != game_name:
            continue
        version = played_by(game_name, metadata.model)
        if version >= holdout_from:
            unseen.append(str(metadata_path.parent))
        elif version >= trained_from:
            trained.append(str(metadata_path.parent))
    if not trained or not unseen:
        raise SystemExit(
            f"{root}: {len(trained)} shard(s) before version {holdout_from} and "
            f"{len(unseen)} from it on; both parts need at least one"
        )
    return trained, unseen


def parse_network(spec: str) -> NetworkConfig:
    blocks, _, channels = spec.partition("x")
    if not (blocks.isdigit() and channels.isdigit()):
        raise SystemExit(f"--networks: {spec!r} is not BLOCKSxCHANNELS, e.g. 10x64")
    return NetworkConfig(kind="resnet", blocks=int(blocks), channels=int(channels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--game", default="connect4")
    parser.add_argument("--replay", required=True, help="directory or s3:// prefix")
    parser.add_argument("--holdout-from", type=int, required=True)
    parser.add_argument(
        "--trained-from", type=int, default=0, help="train only on shards of this champion on"
    )
    parser.add_argument("--networks", default="5x64,10x64,6x96", help="BLOCKSxCHANNELS,...")
    parser.add_argument("--steps", default="5000", help="comma-separated; each network each")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    game = load(args.game)
    with tempfile.TemporaryDirectory(prefix="cartridge-capacity-replay-") as copy:
        replay = Path(args.replay)
        if storage.is_s3(args.replay):
            replay = storage.download_dir(args.replay, copy)
        measure(game, replay, args)


def measure(game, replay: Path, args: argparse.Namespace) -> None:
    networks = {spec: parse_network(spec) for spec in args.networks.split(",")}
    trained, unseen = split_replay(replay, game.name, args.holdout_from, args.trained_from)
    data = load_replay(trained + unseen, game.name)
    device = select_device(args.device)
    args.out.mkdir(parents=True, exist_ok=True)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "trained_shards": len(trained),
                "unseen_shards": len(unseen),
            }
        ),
        flush=True,
    )
    for steps in (int(s) for s in args.steps.split(",")):
        for spec, network in networks.items():
            config = TrainConfig(
                game=game.name,
                steps=steps,
                batch_size=args.batch_size,
                network=network,
                device=args.device,
                checkpoint_every=steps,
                log_every=100,
            )
            with tempfile.TemporaryDirectory(prefix="cartridge-capacity-") as workdir:
                began = time.perf_counter()
                result = train(
                    config,
                    trained,
                    checkpoint_dir=f"{workdir}/checkpoint",
                    tracking_uri=f"sqlite:///{workdir}/mlflow.db",
                    register=False,
                )
                seconds = time.perf_counter() - began
                saved = checkpoint.load(result.checkpoint)
            model = build_network(game, network)
            model.load_state_dict(saved["model"])
            losses = starting_losses(model.to(device), data, set(trained), device)
            name = f"{spec}-{steps}"
            export_onnx(model.cpu(), game, args.out / f"{name}.onnx", data.value_discount)
            row = {"network": spec, "steps": steps, "batch_size": args.batch_size}
            row |= {"trained_from": args.trained_from}
            row |= {"train_seconds": round(seconds, 1)}
            row |= {key: round(value, 4) for key, value in losses.items()}
            print(json.dumps(row), flush=True)
            with open(args.out / "capacity.jsonl", "a") as results:
                results.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
