"""Retention: what storage may forget, and forgetting it safely while everything runs.

Kept, per game: the newest `keep_versions` registry versions and every version that
holds an alias or was ever champion (its `promoted_at` tag); the replay iterations
inside the largest replay window any of the game's pipeline runs asked for (and at
least `keep_iterations`); the training checkpoints of pipeline runs that may still
resume (running, or failed or stopped less than `keep_failed_days` ago, since KFP can
retry them). Everything else is deleted from S3, the registry and the Triton
repository.

Safe at any time, also during training and promotion: nothing younger than
`min_age_minutes` is touched (a shard being uploaded, a version just registered, a
checkpoint being written), and a version's aliases are read again just before it
goes. Deletions are ordered so an interrupted pass leaves only what the next pass
deletes: a version's files go before its registry entry, which the next pass still
lists.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from cartridge import storage
from cartridge.names import experiment_name, registered_model_name
from cartridge.settings import RetentionSettings

log = logging.getLogger(__name__)

EVER_CHAMPION_TAG = "promoted_at"  # set by promotion, never removed
WINDOW_PARAMETER = "replay_window"  # as the pipeline run's MLflow params hold it


Kind = Literal["model-version", "replay-iteration", "uncommitted-shard", "checkpoints"]


class Deletion(BaseModel):
    kind: Kind
    game: str
    target: str  # an s3:// prefix, or `cartridge-<game> v<N>`
    reason: str


class CollectionReport(BaseModel):
    dry_run: bool
    deletions: list[Deletion] = []
    kept: dict[str, int] = {}  # what was looked at and kept, by kind
    errors: list[str] = []

    def summary(self) -> str:
        """One line per deletion (or would-be deletion), then the counts."""
        verb = "would delete" if self.dry_run else "deleted"
        lines = [f"{verb} {d.kind} {d.target}: {d.reason}" for d in self.deletions]
        kept = ", ".join(f"{n} {kind}" for kind, n in sorted(self.kept.items()))
        lines.append(f"{verb} {len(self.deletions)}; kept {kept or 'nothing'}")
        lines += [f"failed (retried next pass): {e}" for e in self.errors]
        return "\n".join(lines)


def collect(
    client: MlflowClient,
    games: list[str],
    policy: RetentionSettings,
    *,
    replay_root: str,
    checkpoint_root: str,
    repository: str | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> CollectionReport:
    """Plan and (unless `dry_run`) carry out one pass over `games`. A deletion that
    fails is reported and the pass goes on; the next pass retries it."""
    now = time.time() if now is None else now
    report = CollectionReport(dry_run=dry_run)
    for game_name in games:
        runs = _pipeline_runs(client, game_name)
        planned = [
            *_versions_to_delete(client, game_name, policy, now, report),
            *_iterations_to_delete(game_name, replay_root, runs, policy, now, report),
            *_checkpoints_to_delete(game_name, checkpoint_root, runs, policy, now, report),
        ]
        for deletion in planned:
            if not dry_run:
                try:
                    if not _delete(client, deletion, repository):
                        _count(report, f"{deletion.kind} (now in use)")
                        continue
                except (storage.StorageError, MlflowException, OSError) as error:
                    report.errors.append(f"{deletion.target}: {error}")
                    log.warning("not deleted: %s: %s", deletion.target, error)
                    continue
            report.deletions.append(deletion)
            log.info(
                "%s %s %s (%s)",
                "would delete" if dry_run else "deleted",
                deletion.kind,
                deletion.target,
                deletion.reason,
            )
    return report


def _exists(root: str) -> bool:
    """An s3:// prefix always 'exists' (listing an empty one is cheap); a folder must."""
    return storage.is_s3(root) or Path(root).is_dir()


def _count(report: CollectionReport, kind: str, n: int = 1) -> None:
    report.kept[kind] = report.kept.get(kind, 0) + n


def _pipeline_runs(client: MlflowClient, game_name: str) -> dict[str, object]:
    """The game's pipeline runs (MLflow's parent runs), by KFP run id."""
    experiment = client.get_experiment_by_name(experiment_name(game_name))
    if experiment is None:
        return {}
    runs = client.search_runs(
        [experiment.experiment_id], "tags.kind = 'pipeline'", max_results=5000
    )
    return {run.data.tags.get("pipeline_run_id", ""): run for run in runs}


def _aliased(client: MlflowClient, name: str) -> set[str]:
    try:
        return {str(v) for v in client.get_registered_model(name).aliases.values()}
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return set()
        raise


def _versions_to_delete(
    client: MlflowClient, game_name: str, policy: RetentionSettings, now: float, report
) -> list[Deletion]:
    name = registered_model_name(game_name)
    aliased = _aliased(client, name)
    versions = client.search_model_versions(f"name = '{name}'", max_results=10000)
    newest = sorted(versions, key=lambda v: int(v.version), reverse=True)
    deletions = []
    for rank, version in enumerate(newest):
        number = str(version.version)
        if rank < policy.keep_versions:
            _count(report, "model-version (newest)")
        elif number in aliased:
            _count(report, "model-version (alias)")
        elif EVER_CHAMPION_TAG in version.tags:
            _count(report, "model-version (was champion)")
        elif now - version.creation_timestamp / 1000 < policy.min_age_minutes * 60:
            _count(report, "model-version (young)")
        else:
            deletions.append(
                Deletion(
                    kind="model-version",
                    game=game_name,
                    target=f"{name} v{number}",
                    reason=f"older than the newest {policy.keep_versions}, never champion",
                )
            )
    return deletions


def _window(runs: dict[str, object], policy: RetentionSettings) -> int:
    asked = [
        int(run.data.params[WINDOW_PARAMETER])
        for run in runs.values()
        if run.data.params.get(WINDOW_PARAMETER, "").isdigit()
    ]
    return max([policy.keep_iterations, *asked])


def _iterations_to_delete(
    game_name: str, replay_root: str, runs, policy: RetentionSettings, now: float, report
) -> list[Deletion]:
    from cartridge.training.data import list_replay

    root = storage.join(replay_root, game_name)
    if not _exists(root):
        return []
    listing = list_replay(root)
    window = _window(runs, policy)
    old_enough = now - policy.min_age_minutes * 60
    _count(report, "replay-iteration (window)", len(listing.iterations[-window:]))
    outside = listing.iterations[: max(0, len(listing.iterations) - window)]
    candidates = [
        ("replay-iteration", it.location, it.played,
         f"outside the newest {window} iterations (the largest replay window)")
        for it in outside
    ] + [
        ("uncommitted-shard", shard, written,
         "an interrupted write: files without the metadata that completes a shard")
        for shard, written in listing.uncommitted.items()
    ]  # fmt: skip
    deletions = []
    for kind, target, written, reason in candidates:
        if written > old_enough:
            _count(report, f"{kind} (young)")
        else:
            deletions.append(Deletion(kind=kind, game=game_name, target=target, reason=reason))
    return deletions


def _checkpoints_to_delete(
    game_name: str, checkpoint_root: str, runs, policy: RetentionSettings, now: float, report
) -> list[Deletion]:
    root = storage.join(checkpoint_root, game_name)
    if not _exists(root):
        return []
    files = storage.modified_times(root)
    newest: dict[str, float] = {}
    for path, modified in files.items():
        run_folder = storage.join(root, path[len(root) :].strip("/").split("/", 1)[0])
        newest[run_folder] = max(newest.get(run_folder, 0.0), modified)
    deletions = []
    for folder, modified in sorted(newest.items()):
        run = runs.get(folder.rsplit("/", 1)[-1])
        status = run.info.status if run is not None else None
        ended = (run.info.end_time or 0) / 1000 if run is not None else modified
        if modified > now - policy.min_age_minutes * 60 or status in ("RUNNING", "SCHEDULED"):
            _count(report, "checkpoints (run may resume)")
            continue
        if status != "FINISHED" and ended > now - policy.keep_failed_days * 86400:
            _count(report, "checkpoints (retry window)")
            continue
        why = (
            "its pipeline run finished; the trained weights are in the registry"
            if status == "FINISHED"
            else f"its pipeline run ended ({status or 'no MLflow run'}) over "
            f"{policy.keep_failed_days:g} days ago"
        )
        deletions.append(Deletion(kind="checkpoints", game=game_name, target=folder, reason=why))
    return deletions


def _delete(client: MlflowClient, deletion: Deletion, repository: str | None) -> bool:
    """Carry out one deletion; False when it is in use by now and was left alone."""
    if deletion.kind != "model-version":
        storage.delete_prefix(deletion.target)
        return True
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from cartridge.serving import triton

    name, number = deletion.target.rsplit(" v", 1)
    if number in _aliased(client, name):  # promoted or rolled back to since the plan
        return False
    version = client.get_model_version(name, number)
    triton.withdraw(deletion.game, number, repository)
    model_id = logged_model_id(version)
    if model_id:
        logged = client.get_logged_model(model_id)
        get_artifact_repository(logged.artifact_location).delete_artifacts()
    if version.run_id:
        artifact_uri = client.get_run(version.run_id).info.artifact_uri
        get_artifact_repository(artifact_uri).delete_artifacts("checkpoint")
    client.delete_model_version(name, number)
    if model_id:
        client.delete_logged_model(model_id)
    return True


def logged_model_id(version) -> str | None:
    """The MLflow logged model a registry version was made from. The registry's answers
    leave `model_id` empty and name it in `source` (`models:/m-...`) instead."""
    if version.model_id:
        return version.model_id
    source = version.source or ""
    return source.removeprefix("models:/") if source.startswith("models:/m-") else None
