"""Replay shards: the immutable unit of self-play data.

A shard is a directory holding one `.npy` file per array and `metadata.json`,
which names the game, the model and search settings that produced it, and the
sha256 of every array file. `.npy` is byte-for-byte deterministic, so the same
seed yields the same shard and its checksums double as an identity. The
metadata is written last, so a directory without it is an unfinished shard.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from cartridge.games import GAME_NAMES, load

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
ARRAY_NAMES = ("planes", "policy", "outcome", "legal_mask")


class ShardError(ValueError):
    """A shard that is missing, truncated, modified or inconsistent."""


class ArrayInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shape: list[int]
    dtype: str
    sha256: str


class ShardMetadata(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format_version: int = FORMAT_VERSION
    game: str
    model: str
    model_sha256: str | None = None
    simulations: int
    seed: int
    games: int
    positions: int
    first_player_wins: int
    draws: int
    second_player_wins: int
    config: dict
    package_version: str
    arrays: dict[str, ArrayInfo] = {}


@dataclass
class ReplayShard:
    """Positions from self-play, each seen from its side to move.

    planes: uint8 [N, C, H, W] network input; policy: float32 [N, A] visit-count
    distribution; outcome: float32 [N] final result for the side to move;
    legal_mask: bool [N, A].
    """

    planes: np.ndarray
    policy: np.ndarray
    outcome: np.ndarray
    legal_mask: np.ndarray
    metadata: ShardMetadata

    def __len__(self) -> int:
        return len(self.outcome)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_shard(directory: str | Path, shard: ReplayShard) -> Path:
    """Write `shard` into `directory` (created if needed); never overwrites a shard."""
    directory = Path(directory)
    if (directory / METADATA_FILE).exists():
        raise FileExistsError(f"{directory} already holds a replay shard; shards are immutable")
    _check_consistent(shard.metadata.game, _arrays(shard), str(directory))
    directory.mkdir(parents=True, exist_ok=True)
    infos = {}
    for name, array in _arrays(shard).items():
        path = directory / f"{name}.npy"
        np.save(path, array, allow_pickle=False)
        infos[name] = ArrayInfo(
            shape=list(array.shape), dtype=str(array.dtype), sha256=sha256_file(path)
        )
    metadata = shard.metadata.model_copy(update={"arrays": infos})
    shard.metadata = metadata
    partial = directory / f".{METADATA_FILE}.partial"
    partial.write_text(json.dumps(metadata.model_dump(), indent=2, sort_keys=True) + "\n")
    os.replace(partial, directory / METADATA_FILE)
    return directory


def read_metadata(directory: str | Path) -> ShardMetadata:
    directory = Path(directory)
    path = directory / METADATA_FILE
    if not path.is_file():
        raise ShardError(
            f"{directory} is not a replay shard: {METADATA_FILE} is missing "
            "(unfinished or not a shard)"
        )
    try:
        metadata = ShardMetadata.model_validate_json(path.read_text())
    except (ValidationError, UnicodeDecodeError) as error:
        raise ShardError(f"{path} is not valid shard metadata: {error}") from error
    if metadata.format_version != FORMAT_VERSION:
        raise ShardError(
            f"{directory} has shard format {metadata.format_version}; this "
            f"version of cartridge reads format {FORMAT_VERSION}"
        )
    if metadata.game not in GAME_NAMES:
        raise ShardError(f"{directory} names unknown game {metadata.game!r}")
    if set(metadata.arrays) != set(ARRAY_NAMES):
        raise ShardError(
            f"{directory} metadata lists arrays {sorted(metadata.arrays)}, "
            f"expected {sorted(ARRAY_NAMES)}"
        )
    return metadata


def read_shard(directory: str | Path) -> ReplayShard:
    """Load and verify a shard; ShardError says exactly what is wrong with a bad one."""
    directory = Path(directory)
    metadata = read_metadata(directory)
    arrays = {}
    for name in ARRAY_NAMES:
        info = metadata.arrays[name]
        path = directory / f"{name}.npy"
        if not path.is_file():
            raise ShardError(f"{directory} is missing {path.name}")
        if sha256_file(path) != info.sha256:
            raise ShardError(
                f"{path} fails its sha256 check (truncated or modified); refusing the shard"
            )
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ShardError(f"{path} is not a readable array: {error}") from error
        if list(array.shape) != info.shape or str(array.dtype) != info.dtype:
            raise ShardError(
                f"{path} holds {array.dtype}{list(array.shape)}, metadata says "
                f"{info.dtype}{info.shape}"
            )
        arrays[name] = array
    _check_consistent(metadata.game, arrays, str(directory))
    if len(arrays["outcome"]) != metadata.positions:
        raise ShardError(
            f"{directory} holds {len(arrays['outcome'])} positions, metadata "
            f"says {metadata.positions}"
        )
    return ReplayShard(metadata=metadata, **arrays)


def _arrays(shard: ReplayShard) -> dict[str, np.ndarray]:
    return {name: getattr(shard, name) for name in ARRAY_NAMES}


def _check_consistent(game_name: str, arrays: dict[str, np.ndarray], where: str) -> None:
    game = load(game_name)
    count = len(arrays["outcome"])
    expected = {
        "planes": ((count, *game.planes_shape), np.uint8),
        "policy": ((count, game.num_actions), np.float32),
        "outcome": ((count,), np.float32),
        "legal_mask": ((count, game.num_actions), np.bool_),
    }
    for name, (shape, dtype) in expected.items():
        array = arrays[name]
        if array.shape != shape or array.dtype != dtype:
            raise ShardError(
                f"{where}: {name} is {array.dtype}{list(array.shape)}, expected "
                f"{np.dtype(dtype)}{list(shape)} for {game_name}"
            )
