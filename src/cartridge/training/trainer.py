"""`cartridge train`: replay shards in, a registered ONNX challenger out, every step in MLflow.

The run is created before any data is read, so every failure (bad shards, a
diverging loss, an ONNX export that disagrees with torch) leaves a FAILED run
with its reason and registers nothing. SIGTERM (a spot node being reclaimed)
saves a checkpoint, marks the run KILLED and exits; `resume=True` picks the same
run and continues from that checkpoint exactly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch

import cartridge
from cartridge import storage
from cartridge.evaluators.onnx_model import OnnxEvaluator
from cartridge.evaluators.torch_model import TorchEvaluator
from cartridge.games import load
from cartridge.names import registered_model_name
from cartridge.networks import NetworkConfig, build_network, default_network_config, export_onnx
from cartridge.tracking import MetricBuffer, ensure_experiment, log_and_register, use_tracking
from cartridge.training import checkpoint
from cartridge.training.batches import BatchSampler
from cartridge.training.config import TrainConfig
from cartridge.training.data import ReplayData, load_replay
from cartridge.training.heldout import starting_losses
from cartridge.training.losses import alphazero_loss
from cartridge.training.reanalyse import Reanalyser

log = logging.getLogger(__name__)

ONNX_TOLERANCE = 1e-4
VERIFY_POSITIONS = 256


class TrainingError(RuntimeError):
    """The run cannot produce a trustworthy model; it is marked FAILED."""


class Preempted(RuntimeError):
    """SIGTERM arrived; the checkpoint is saved and the run can be resumed."""


@dataclass
class TrainResult:
    run_id: str
    steps: int
    checkpoint: str
    model_uri: str | None
    model_version: str | None
    metrics: dict[str, float]


def select_device(preference: str) -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise TrainingError(
            f"device 'cuda' requested but no GPU is visible (torch {torch.__version__}, "
            f"{build}): run on the training image on a GPU node, or ask for device 'cpu'"
        )
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(preference)


def git_commit() -> str:
    """The commit this code was built from: the image's CARTRIDGE_GIT_COMMIT (set at
    build time, as images carry no .git), else the checkout's HEAD, else 'unknown'."""
    built_from = os.environ.get("CARTRIDGE_GIT_COMMIT", "").strip()
    if built_from:
        return built_from
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def _sigterm_flag():
    """Yields an Event that SIGTERM sets, so the loop stops at a step boundary."""
    flag = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: flag.set())
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)


def verify_onnx(model: torch.nn.Module, onnx_path: Path, game, data: ReplayData) -> float:
    """Max abs difference between ONNX and torch on real positions; TrainingError above 1e-4."""
    planes = data.planes[:VERIFY_POSITIONS].astype(np.float32)
    onnx_logits, onnx_values = OnnxEvaluator(game, onnx_path).evaluate(planes)
    torch_logits, torch_values = TorchEvaluator(game, model).evaluate(planes)
    difference = float(
        max(np.abs(onnx_logits - torch_logits).max(), np.abs(onnx_values - torch_values).max())
    )
    if not difference < ONNX_TOLERANCE:
        raise TrainingError(
            f"ONNX export disagrees with torch by {difference:.2e} "
            f"(limit {ONNX_TOLERANCE:.0e}) on {len(planes)} positions"
        )
    return difference


def train(
    config: TrainConfig,
    shards: list[str],
    *,
    checkpoint_dir: str,
    tracking_uri: str,
    resume: bool = False,
    iteration: int = 0,
    pipeline_run_id: str | None = None,
    init_checkpoint: str | None = None,
    init_model: str | None = None,
    register: bool = True,
    parent_run_id: str | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train, export, verify, log and register; see the module docstring for failures.

    `init_checkpoint` holds starting weights; `init_model` names the model they came
    from (a `models:/` URI), recorded as the run's `initial_weights` tag for lineage."""
    saved = None
    if resume:
        if not checkpoint.exists(checkpoint_dir):
            raise FileNotFoundError(f"--resume: no checkpoint in {checkpoint_dir}")
        saved = checkpoint.load(checkpoint.checkpoint_location(checkpoint_dir))
        config = TrainConfig.model_validate(saved["config"])
        shards = saved["shards"]
    elif checkpoint.exists(checkpoint_dir):
        raise FileExistsError(
            f"{checkpoint_dir} already holds a checkpoint; pass --resume to "
            "continue that run or choose another --checkpoint-dir"
        )
    game = load(config.game)
    network = config.network or default_network_config(game)
    config = config.model_copy(update={"network": network})
    client = use_tracking(tracking_uri)
    experiment_id = ensure_experiment(client, game.name)
    run = mlflow.start_run(
        run_id=saved["run_id"] if saved else None,
        experiment_id=None if saved else experiment_id,
        run_name=None if saved else f"{game.name}-iter{iteration:04d}",
        log_system_metrics=False,
    )
    run_id = run.info.run_id
    tags = {
        "game": game.name,
        "iteration": str(iteration),
        "shards": json.dumps(shards)[:4900],
        "pipeline_run_id": pipeline_run_id or "",
        "initial_weights": init_model or "",
        "git_commit": git_commit(),
        "cartridge_version": cartridge.__version__,
    }
    if parent_run_id:  # shows the run under the pipeline's run in the MLflow UI
        tags["mlflow.parentRunId"] = parent_run_id
    try:
        if not saved:
            mlflow.set_tags(tags)
            mlflow.log_params(_flat_params(config, len(shards)))
            mlflow.log_dict({"shards": shards}, "inputs/shards.json")
        result = _train_run(
            config,
            game,
            network,
            shards,
            saved,
            run_id,
            client,
            checkpoint_dir,
            init_checkpoint,
            register,
            tags,
            on_step,
        )
    except Preempted:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException as error:
        with contextlib.suppress(Exception):
            mlflow.set_tag("failure", f"{type(error).__name__}: {error}"[:4900])
        mlflow.end_run(status="FAILED")
        raise
    mlflow.end_run(status="FINISHED")
    return result


STEP_STATS = ("loss", "policy_loss", "value_loss", "grad_norm")


class _PendingStats:
    """Per-step statistics kept on the device until the next upload, so no step waits
    on the GPU for a number. Draining checks them: a diverged step raises before any
    later checkpoint or export can save its weights."""

    def __init__(self):
        self.steps: list[int] = []
        self.rows: list[torch.Tensor] = []
        self.learning_rates: list[float] = []

    def add(self, step: int, stats: tuple[torch.Tensor, ...], learning_rate: float) -> None:
        self.steps.append(step)
        self.rows.append(torch.stack([t.detach().float() for t in stats]))
        self.learning_rates.append(learning_rate)

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        if not self.steps:
            return []
        table = torch.stack(self.rows).cpu()
        diverged = (~torch.isfinite(table)).any(dim=1).nonzero()
        if len(diverged):
            row = int(diverged[0])
            loss, *_, grad_norm = table[row].tolist()
            raise TrainingError(
                f"training diverged at step {self.steps[row]}: loss {loss}, "
                f"grad norm {grad_norm}; stopping before the weights are saved"
            )
        drained = [
            (step, {**dict(zip(STEP_STATS, row.tolist(), strict=True)), "learning_rate": rate})
            for step, row, rate in zip(self.steps, table, self.learning_rates, strict=True)
        ]
        self.steps, self.rows, self.learning_rates = [], [], []
        return drained


def _flat_params(config: TrainConfig, shard_count: int) -> dict:
    params = config.model_dump(exclude={"network"})
    params.update({f"network_{k}": v for k, v in config.network.model_dump().items()})
    params["shard_count"] = shard_count
    return params


def log_replay_window(game_name: str, shards: list[str], positions: int) -> None:
    """The replay window as the active run's MLflow dataset input (context `training`):
    where the shards live, how many, and a digest of which (shards are immutable, so
    their locations identify the data)."""
    import hashlib
    import os
    import warnings

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    if storage.is_s3(shards[0]):
        root = os.path.commonprefix([s.rstrip("/") + "/" for s in shards]).rsplit("/", 1)[0]
    else:
        root = Path(os.path.commonpath([str(Path(s).resolve()) for s in shards])).as_uri()
    digest = hashlib.sha256("\n".join(sorted(shards)).encode()).hexdigest()[:16]
    with warnings.catch_warnings():  # a file:// URI matches MLflow's local source twice
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(root)
    dataset = MetaDataset(source, name=f"{game_name}-replay-window", digest=digest)
    mlflow.log_input(
        dataset,
        context="training",
        tags={"shards": str(len(shards)), "positions": str(positions)},
    )


def _train_run(
    config,
    game,
    network: NetworkConfig,
    shards,
    saved,
    run_id,
    client,
    checkpoint_dir,
    init_checkpoint,
    register,
    tags,
    on_step,
) -> TrainResult:
    data = load_replay(shards, game.name)
    if not saved:  # a resumed run logged its window when it began
        log_replay_window(game.name, shards, len(data))
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    model = build_network(game, network)
    initial = (
        _load_initial_weights(model, init_checkpoint, game.name, network) if init_checkpoint else {}
    )
    model.to(device)
    if device.type == "cuda" and network.kind == "resnet":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    if not saved:
        _continue_optimizer(optimizer, initial.get("optimizer"))
        if "shards" in initial:  # checkpoints from before the list was saved lack it
            trained_on = set(initial["shards"])
            measured = starting_losses(model, data, trained_on, device)
            if measured["unseen_positions"]:
                # How often each new position will be drawn: the knob behind the gap.
                samples = config.steps * config.batch_size
                measured["samples_per_unseen_position"] = samples / measured["unseen_positions"]
            mlflow.log_metrics(measured, step=0)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    generator = torch.Generator().manual_seed(config.seed)
    step = 0
    if saved:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        step = saved["step"]
        log.info("resuming run %s at step %d of %d", run_id, step, config.steps)
    sampler = BatchSampler(data, game, device, generator, config.augment)
    reanalyse = Reanalyser(
        game,
        model,
        device,
        fraction=config.reanalyse_fraction,
        batch_size=config.batch_size,
        simulations=config.reanalyse_simulations,
        value_discount=data.value_discount,
    )
    metrics = MetricBuffer(client, run_id)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )

    pending = _PendingStats()
    last: dict[str, float] = {}
    window_start, window_samples = time.perf_counter(), 0
    window_reanalysis = reanalyse.seconds

    def flush_metrics() -> None:
        """Upload pending step metrics; raises first if any step diverged."""
        nonlocal last, window_start, window_samples, window_reanalysis
        for logged_step, values in pending.drain():
            metrics.add(logged_step, values)
            last = values
        elapsed = max(time.perf_counter() - window_start, 1e-9)
        if window_samples:
            metrics.add(step, {"samples_per_sec": window_samples / elapsed})
            if reanalyse.rows:
                share = (reanalyse.seconds - window_reanalysis) / elapsed
                metrics.add(step, {"reanalyse_time_share": share})
        metrics.flush()
        window_start, window_samples = time.perf_counter(), 0
        window_reanalysis = reanalyse.seconds

    def save_checkpoint() -> str:
        flush_metrics()
        return checkpoint.save(
            checkpoint_dir,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "torch_rng": torch.get_rng_state(),
                "step": step,
                "run_id": run_id,
                "config": config.model_dump(mode="json"),
                "shards": shards,
                "game": game.name,
            },
        )

    model.train()
    with _sigterm_flag() as preempt:
        while step < config.steps:
            planes, target_policy, target_value = sampler.sample(config.batch_size)
            target_policy, target_value = reanalyse(planes, target_policy, target_value)
            if device.type == "cuda" and network.kind == "resnet":
                planes = planes.contiguous(memory_format=torch.channels_last)
            with autocast:
                logits, values = model(planes)
            loss, policy_loss, value_loss = alphazero_loss(
                logits, values, target_policy, target_value, config.value_loss_weight
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            step += 1
            window_samples += config.batch_size
            pending.add(
                step, (loss, policy_loss, value_loss, grad_norm), scheduler.get_last_lr()[0]
            )
            if step % config.log_every == 0 or step == config.steps:
                flush_metrics()
            if step % config.checkpoint_every == 0 and step < config.steps:
                save_checkpoint()
            if on_step:
                on_step(step)
            if preempt.is_set():
                location = save_checkpoint()
                raise Preempted(f"SIGTERM at step {step}; checkpoint saved to {location}")
    location = save_checkpoint()
    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    with tempfile.TemporaryDirectory(prefix="cartridge-export-") as workdir:
        onnx_path = export_onnx(model, game, Path(workdir) / "model.onnx", data.value_discount)
        difference = verify_onnx(model, onnx_path, game, data)
        mlflow.log_metric("onnx_max_abs_diff", difference, step=step)
        final = Path(workdir) / "checkpoint.pt"
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "game": game.name,
                "network": network.model_dump(),
                "step": step,
                # What these weights trained on: the next run from them tells seen
                # positions from new ones (training/heldout.py).
                "shards": shards,
            },
            final,
        )
        mlflow.log_artifact(str(final), artifact_path="checkpoint")
        model_uri = version = None
        if register:
            version_tags = {
                **tags,
                "run_id": run_id,
                "onnx_max_abs_diff": f"{difference:.3e}",
                "value_discount": repr(data.value_discount),
            }
            model_uri, version = log_and_register(client, onnx_path, game, version_tags)
            log.info(
                "registered %s version %s (alias challenger)",
                registered_model_name(game.name),
                version,
            )
    return TrainResult(
        run_id=run_id,
        steps=step,
        checkpoint=location,
        model_uri=model_uri,
        model_version=version,
        metrics=last,
    )


def _load_initial_weights(model, location: str, game_name: str, network: NetworkConfig) -> dict:
    """Start from another run's weights (the champion's), refusing a different game or
    shape. Returns the checkpoint: that run's optimizer state and the shards it trained
    on, where it holds them."""
    saved = checkpoint.load(location)
    if saved.get("game") != game_name:
        raise TrainingError(
            f"initial checkpoint {location} is for {saved.get('game')}, not {game_name}"
        )
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:
        raise TrainingError(
            f"initial checkpoint {location} does not fit the {network.kind} "
            f"network configured here: {str(error).splitlines()[0]}"
        ) from error
    return saved


def _continue_optimizer(optimizer: torch.optim.Optimizer, initial: dict | None) -> None:
    """Take over AdamW's moment estimates from the run the weights came from.

    A fresh AdamW has no second-moment estimate, so its first steps move every weight
    by about the full learning rate whatever its gradient's scale: on a trained network
    that is a jolt each iteration of continuous training. The learning rate, weight
    decay and schedule stay this run's own; only the per-weight statistics carry over.
    The tag `optimizer_state` says which happened."""
    if initial is None:
        mlflow.set_tag("optimizer_state", "fresh")
        return
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in initial["state"].items():
        shapes = {tuple(v.shape) for v in values.values() if v.dim() > 0}
        if index >= len(parameters) or shapes - {tuple(parameters[index].shape)}:
            raise TrainingError(
                f"the initial checkpoint's optimizer state does not fit parameter {index}"
            )
    optimizer.load_state_dict(
        {"state": initial["state"], "param_groups": optimizer.state_dict()["param_groups"]}
    )
    mlflow.set_tag("optimizer_state", "carried")
