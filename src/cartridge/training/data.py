"""The replay window: shards from local paths or S3, checked and stacked for sampling."""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cartridge import storage
from cartridge.replay import METADATA_FILE, ReplayShard, ShardError, read_shard

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Replay data that cannot be trained on: missing, empty, corrupt or for another game."""


@dataclass
class ReplayData:
    planes: np.ndarray  # uint8 [N, C, H, W]
    policy: np.ndarray  # float32 [N, A]
    outcome: np.ndarray  # float32 [N]
    sources: list[str]
    # Per-ply discount in the value targets; the network's values mean "discounted
    # result", so every search that plays it must back up with the same factor.
    value_discount: float = 1.0
    shard_sizes: list[int] = field(default_factory=list)  # positions per source, in order

    def __len__(self) -> int:
        return len(self.outcome)

    def from_sources(self, sources: set[str]) -> np.ndarray:
        """Bool mask [N]: which positions came from any of `sources`."""
        return np.repeat([source in sources for source in self.sources], self.shard_sizes)


class PlayedIteration(NamedTuple):
    location: str  # the iteration's folder or prefix
    played: float  # its newest file (epoch seconds): shards are immutable, so when it was played
    shards: list[str]


class ReplayListing(NamedTuple):
    iterations: list[PlayedIteration]  # oldest first
    uncommitted: dict[str, float]  # shard folder -> its newest file, for shards without metadata


def list_replay(replay_root: str) -> ReplayListing:
    """Every iteration under `replay_root`, oldest first, from one listing.

    A shard is a directory holding `metadata.json`; its parent is its iteration.
    This covers `<root>/<iteration>/<shard>/` (hand-made windows) and the
    pipeline's `<root>/<pipeline run>/<iteration>/<shard>/`. Iterations are ordered by
    their newest file, ties by name. A shard's metadata is written last: a folder
    without it is an interrupted write (a killed step, a store that went away), not a
    shard yet, and is listed apart."""
    try:
        files = storage.modified_times(replay_root)
    except storage.StorageError as error:
        raise DataError(f"cannot list replay root {replay_root}: {error}") from error
    played: dict[str, float] = {}  # shard directory -> newest file in it
    for path, modified in files.items():
        shard = path.rsplit("/", 1)[0]
        played[shard] = max(played.get(shard, 0.0), modified)
    shards = sorted(shard for shard in played if f"{shard}/{METADATA_FILE}" in files)
    iterations: dict[str, PlayedIteration] = {}
    for shard in shards:
        location = shard.rsplit("/", 1)[0]
        found = iterations.get(location, PlayedIteration(location, 0.0, []))
        iterations[location] = found._replace(
            played=max(found.played, played[shard]), shards=[*found.shards, shard]
        )
    return ReplayListing(
        sorted(iterations.values(), key=lambda it: (it.played, it.location)),
        {shard: played[shard] for shard in sorted(set(played) - set(shards))},
    )


def resolve_window(replay_root: str, window: int) -> list[str]:
    """Shards of the `window` most recently played iterations under `replay_root`
    (`list_replay`). In the pipeline's layout the window reaches back into earlier
    runs: a recurring run that started cold would train on its own first iteration
    alone. One listing, nothing downloaded."""
    if window < 1:
        raise DataError(f"replay window must be at least 1 iteration, got {window}")
    listing = list_replay(replay_root)
    if listing.uncommitted:
        log.warning(
            "skipping %d uncommitted shard(s) (no %s; an interrupted write): %s",
            len(listing.uncommitted),
            METADATA_FILE,
            ", ".join(listing.uncommitted),
        )
    if not listing.iterations:
        raise DataError(
            f"replay root {replay_root} holds no iterations (no shard with {METADATA_FILE})"
        )
    return sorted(shard for it in listing.iterations[-window:] for shard in it.shards)


def open_shard(location: str, workdir: Path) -> ReplayShard:
    """Read a shard from a directory or an s3:// prefix, checksums verified either way."""
    if storage.is_s3(location):
        local = workdir / f"shard-{len(list(workdir.iterdir()))}"
        try:
            storage.download_dir(location, local)
        except storage.StorageError as error:
            raise DataError(f"cannot fetch shard {location}: {error}") from error
        try:
            return read_shard(local)
        except ShardError as error:  # name the shard the user gave, not our copy
            raise ShardError(str(error).replace(str(local), location)) from None
    return read_shard(location)


def load_replay(locations: list[str], game_name: str) -> ReplayData:
    """Stack every shard into one array set; refuse anything that is not `game_name` data."""
    if not locations:
        raise DataError("no replay shards given")
    parts: list[ReplayShard] = []
    with tempfile.TemporaryDirectory(prefix="cartridge-shards-") as workdir:
        for location in locations:
            try:
                shard = open_shard(str(location), Path(workdir))
            except ShardError as error:
                raise DataError(f"corrupt shard {location}: {error}") from error
            if shard.metadata.game != game_name:
                raise DataError(
                    f"shard {location} holds {shard.metadata.game} positions; this run "
                    f"trains {game_name}"
                )
            parts.append(shard)
    total = sum(len(p) for p in parts)
    if total == 0:
        raise DataError(f"the {len(parts)} shard(s) given hold no positions")
    return ReplayData(
        planes=np.concatenate([p.planes for p in parts]),
        policy=np.concatenate([p.policy for p in parts]),
        outcome=np.concatenate([p.outcome for p in parts]),
        sources=[str(location) for location in locations],
        value_discount=_value_discount(parts),
        shard_sizes=[len(p) for p in parts],
    )


def _value_discount(parts: list[ReplayShard]) -> float:
    """The value discount of most positions: a window may straddle a change of the
    setting, and the network learns mostly what most of its targets say."""
    positions: dict[float, int] = {}
    for part in parts:
        search = part.metadata.config.get("search", {})
        discount = float(search.get("value_discount", 1.0))
        positions[discount] = positions.get(discount, 0) + len(part)
    return max(positions, key=lambda discount: (positions[discount], discount))
