"""`cartridge bench train`: the real trainer against a bare loop of the same network."""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from cartridge.evaluators import UniformEvaluator
from cartridge.games import Game
from cartridge.networks import NetworkConfig, build_network, default_network_config
from cartridge.replay import write_shard
from cartridge.selfplay import SelfPlayConfig, play_selfplay
from cartridge.training import TrainConfig, train
from cartridge.training.losses import alphazero_loss
from cartridge.training.trainer import select_device

WARMUP_STEPS = 5


def bare_loop(
    game: Game, network: NetworkConfig, batch_size: int, steps: int, device: torch.device
) -> list[float]:
    """Seconds per step of forward, loss, backward and optimizer on tensors already on
    the device: the ceiling the trainer is measured against (bf16 autocast on CUDA)."""
    torch.manual_seed(0)
    model = build_network(game, network).to(device)
    channels_last = device.type == "cuda" and network.kind == "resnet"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    planes = (torch.rand(batch_size, *game.planes_shape, device=device) > 0.5).float()
    if channels_last:
        planes = planes.contiguous(memory_format=torch.channels_last)
    policy = torch.softmax(torch.randn(batch_size, game.num_actions, device=device), -1)
    value = torch.rand(batch_size, device=device) * 2 - 1
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )
    times = []
    for _ in range(WARMUP_STEPS + steps):
        began = time.perf_counter()
        with autocast:
            logits, values = model(planes)
        loss, _, _ = alphazero_loss(logits, values, policy, value, 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - began)
    return times[WARMUP_STEPS:]


def bench_train(
    game: Game,
    batch_size: int = 256,
    steps: int = 50,
    network: NetworkConfig | None = None,
    device: str = "auto",
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Samples per second of `train()` (real self-play shards, augmentation, batched MLflow
    logging to an embedded store, checkpoints) next to `bare_loop`, same run, same device."""
    network = network or default_network_config(game)
    torch_device = select_device(device)
    stamps: list[float] = []

    def record(step: int) -> None:
        if torch_device.type == "cuda":
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        if on_step:
            on_step(step)

    with tempfile.TemporaryDirectory(prefix="cartridge-bench-train-") as workdir:
        home = Path(workdir)
        selfplay = SelfPlayConfig.for_game(game, 64, 16, parallel_games=64)
        shard = write_shard(
            home / "shard", play_selfplay(game, UniformEvaluator(game), selfplay, seed=0)
        )
        config = TrainConfig(
            game=game.name,
            steps=WARMUP_STEPS + steps,
            batch_size=batch_size,
            network=network,
            device=device,
            checkpoint_every=10_000,
        )
        # MLflow exports the tracking URI it is given to the environment, where later
        # commands in this process would find the deleted throwaway store.
        exported = os.environ.get("MLFLOW_TRACKING_URI")
        try:
            train(
                config,
                [str(shard)],
                checkpoint_dir=str(home / "ckpt"),
                tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
                register=False,
                on_step=record,
            )
        finally:
            if exported is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = exported
    trainer_steps = [
        b - a for a, b in zip(stamps[WARMUP_STEPS - 1 :], stamps[WARMUP_STEPS:], strict=False)
    ]
    bare_steps = bare_loop(game, network, batch_size, steps, torch_device)
    trainer_step, bare_step = statistics.median(trainer_steps), statistics.median(bare_steps)
    return {
        "game": game.name,
        "network": network.model_dump(),
        "device": torch.cuda.get_device_name() if torch_device.type == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "steps": steps,
        "trainer_ms_per_step": round(trainer_step * 1000, 3),
        "bare_ms_per_step": round(bare_step * 1000, 3),
        "trainer_samples_per_sec": round(batch_size / trainer_step),
        "bare_samples_per_sec": round(batch_size / bare_step),
        "ratio": round(bare_step / trainer_step, 3),
    }
