"""One self-play shard, played and stored: what `cartridge selfplay` and the pipeline's
self-play step both run.

Shards are immutable: a destination that already holds one is refused, or, for a
retried pipeline step, kept as the step's result.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cartridge import storage
from cartridge.names import version_of
from cartridge.replay import METADATA_FILE, ShardMetadata, sha256_file, write_shard
from cartridge.settings import SelfPlaySettings

log = logging.getLogger(__name__)


def holds_shard(destination: str) -> bool:
    """Whether a whole shard is at `destination`: its metadata, written last, is there."""
    if storage.is_s3(destination):
        return storage.join(destination, METADATA_FILE) in storage.list_keys(destination)
    return (Path(destination) / METADATA_FILE).exists()


def _clear_uncommitted(destination: str) -> None:
    """Remove what an interrupted write left at `destination` (files without the
    metadata that completes a shard), so the retry writes a whole shard there."""
    if storage.is_s3(destination):
        removed = storage.delete_prefix(destination)
    else:
        folder = Path(destination)
        removed = sum(1 for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0
        if removed:
            shutil.rmtree(folder)
    if removed:
        log.warning("removed %d file(s) of an uncommitted shard at %s", removed, destination)


def write_selfplay_shard(
    game_name: str,
    destination: str,
    settings: SelfPlaySettings,
    *,
    model: str | None = None,
    evaluator: str = "uniform",
    seed: int = 0,
    parallel_games: int = 64,
    threads: int = 1,
    keep_existing: bool = False,
    on_game_end: Callable[[int], None] | None = None,
    triton: str = "",
) -> ShardMetadata | None:
    """Play `settings.games` games with `model` (an .onnx path or a `models:/` URI;
    without one, the `evaluator` spec) and write the shard to `destination`, a folder or
    an s3:// prefix. A destination that holds a shard already is an error, or with
    `keep_existing` (a retried step) kept, and None returned.

    `triton` (grpc://HOST:PORT) sends the network calls of a `models:/NAME/N` model to
    the Triton serving it, pinned to version N (refused while Triton serves another),
    instead of running it in this process: many self-play pods then share one batching
    GPU server."""
    from cartridge.evaluators import make_evaluator
    from cartridge.games import load
    from cartridge.selfplay import play_selfplay

    if holds_shard(destination):
        if not keep_existing:
            raise FileExistsError(
                f"{destination} already holds a replay shard; shards are immutable"
            )
        log.info("shard %s already written (a retry); keeping it", destination)
        return None
    _clear_uncommitted(destination)
    game = load(game_name)
    spec = model or evaluator
    served = bool(triton and model and re.fullmatch(r"models:/[^/@]+/\d+", model))
    if triton and not served:
        raise ValueError(f"Triton evaluates registry models (models:/NAME/N), not {spec!r}")
    with tempfile.TemporaryDirectory(prefix="cartridge-selfplay-") as workdir:
        model_file = _local_model(model, Path(workdir)) if model and not served else None
        if served:
            network = make_evaluator(f"triton:{triton}", game, version=version_of(model))
        else:
            network = make_evaluator(
                str(model_file) if model_file else evaluator, game, threads=threads, seed=seed
            )
        result = play_selfplay(
            game,
            network,
            settings.config(game, parallel_games=parallel_games),
            seed=seed,
            model=spec,
            model_sha256=sha256_file(model_file) if model_file else None,
            on_game_end=on_game_end,
        )
        if storage.is_s3(destination):
            storage.upload_dir(write_shard(Path(workdir) / "shard", result), destination)
        else:
            write_shard(destination, result)
    return result.metadata


def _local_model(model: str, workdir: Path) -> Path:
    if model.startswith("models:/"):
        from cartridge.tracking import fetch_onnx

        return fetch_onnx(model, workdir)
    return Path(model)
