"""What Triton serves follows the registry: each game's `champion` alias.

Desired state: the version alias `champion` of `cartridge-<game>` names. Actual state:
the version folders in the Triton model repository and the version Triton has loaded.
A pass publishes the champion when its folder is missing, withdraws every other
version (Triton serves the newest folder, so a rollback to an older version needs the
newer ones gone), loads it, and unloads a game whose alias was removed. Every step
reads the current state first, so a pass is idempotent, an interrupted promotion is
finished by the next pass, and several replicas may run passes at once: they all
converge on what the registry says.

A version that cannot be served (its artifact is missing, its tensors are not the
game's) is refused: the served model stays, the reason is logged and written to the
version as tag `serving_refused`, and a later pass skips it until the tag is removed
or the alias moves.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from cartridge.evaluators.triton_model import ModelUnavailable, TritonUnavailable
from cartridge.names import CHAMPION, registered_model_name
from cartridge.serving import triton
from cartridge.tracking import alias_version

log = logging.getLogger(__name__)
REFUSED_TAG = "serving_refused"


class GameServing(BaseModel):
    """One game after a pass: what the registry names and what Triton serves."""

    game: str
    champion: str | None  # the registry's `champion` alias
    served: str | None  # the version Triton has loaded (READY)
    actions: list[str] = []  # what this pass changed
    refused: str | None = None  # why the champion is not served, when it is not
    error: str | None = None  # a server that did not answer; the next pass retries

    @property
    def in_sync(self) -> bool:
        return self.champion == self.served


def refusal(client: MlflowClient, game_name: str, version: str) -> str | None:
    """The reason recorded on `version` for not serving it, if any."""
    tags = client.get_model_version(registered_model_name(game_name), version).tags
    return tags.get(REFUSED_TAG)


def reconcile_game(
    client: MlflowClient,
    control: triton.TritonControl | None,
    game_name: str,
    repository: str | None = None,
) -> GameServing:
    """One pass for one game; see the module's docstring. Without a `control` (no
    Triton to tell) only the repository is brought in line."""
    from cartridge import storage

    champion = alias_version(client, game_name, CHAMPION)
    result = GameServing(game=game_name, champion=champion, served=None)
    try:
        folder = triton.model_folder(game_name, repository)
        exists = storage.is_s3(folder) or Path(folder).is_dir()
        published = (
            {p.rsplit("/", 1)[-1] for p in storage.list_children(folder)} if exists else set()
        )
        reason = refusal(client, game_name, champion) if champion else None
        # A version folder is not enough: a publication cut short before the config
        # (written last, naming its version) left the previous version's config.
        whole = (
            champion in published and triton.published_version(game_name, repository) == champion
        )
        republished = False
        if champion is not None and reason is None and not whole:
            try:
                triton.publish(game_name, champion, repository)
                republished = True
                result.actions.append(f"published v{champion}")
            except triton.Unservable as error:
                reason = str(error)
                client.set_model_version_tag(
                    registered_model_name(game_name), champion, REFUSED_TAG, reason[:4000]
                )
                log.warning("not serving %s v%s: %s", game_name, champion, reason)
        result.refused = reason
        # Another replica (or a promotion) may have moved the alias since it was read:
        # nothing is withdrawn, unloaded or loaded for a champion that is no longer one.
        if alias_version(client, game_name, CHAMPION) != champion:
            result.actions.append("the alias moved during the pass; the next pass follows it")
            return result
        if reason is None:  # a refused champion leaves everything as it was
            for other in sorted(published - {champion}):
                triton.withdraw(game_name, other, repository)
                result.actions.append(f"withdrew v{other}")
        if control is not None:
            state = control.model_state(game_name)
            result.served = state.version if state.state == "READY" else None
            if champion is None and result.served is not None:
                control.unload(game_name)
                result.actions.append(f"unloaded v{result.served}: no version is champion")
                result.served = None
            elif (
                champion is not None
                and reason is None
                and (
                    result.served != champion or republished  # a new config: load it too
                )
            ):
                control.load(game_name)
                result.actions.append(f"loaded v{champion}")
                state = control.model_state(game_name)
                result.served = state.version if state.state == "READY" else None
    except (TritonUnavailable, ModelUnavailable, storage.StorageError, MlflowException) as error:
        result.error = str(error)
        log.warning("reconciling %s: %s", game_name, error)
    if result.actions:
        log.info("%s: %s", game_name, "; ".join(result.actions))
    return result


def reconcile(
    client: MlflowClient,
    control: triton.TritonControl | None,
    games: tuple[str, ...] | None = None,
    repository: str | None = None,
) -> list[GameServing]:
    """One pass over every game (or `games`)."""
    from cartridge.games import GAME_NAMES

    return [reconcile_game(client, control, g, repository) for g in games or GAME_NAMES]


class Reconciler:
    """Reconcile passes in a background thread: one at start, one every `period`
    seconds, and one at once for a game `trigger` names (a webhook delivery). Passes
    run one at a time in this thread; `trigger` only records the game and wakes it, so
    a caller never waits on MLflow, S3 or Triton. `last` holds each game's latest
    outcome. With `webhook_url` and `webhook_secret` it keeps MLflow's webhook pointed
    at that URL (retried each pass until MLflow answers)."""

    def __init__(
        self,
        tracking_uri: str,
        triton_url: str | None,
        period: float = 30.0,
        repository: str | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
        timeout: float = 5.0,
    ):
        if period <= 0:
            raise ValueError(f"the reconcile period must be positive, got {period}")
        self.tracking_uri = tracking_uri
        self.triton_url = triton_url
        self.period = period
        self.repository = repository
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.timeout = timeout
        self.last: dict[str, GameServing] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._webhook_ready = not (webhook_url and webhook_secret)
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)

    def trigger(self, game_name: str | None = None) -> None:
        """Reconcile `game_name` (None: every game) as soon as the current pass ends."""
        from cartridge.games import GAME_NAMES

        with self._lock:
            self._pending.update([game_name] if game_name else GAME_NAMES)
        self._wake.set()

    def _run(self) -> None:
        from cartridge.games import GAME_NAMES
        from cartridge.tracking import use_tracking

        client = use_tracking(self.tracking_uri)
        control = triton.TritonControl(self.triton_url, self.timeout) if self.triton_url else None
        next_full = 0.0
        try:
            while not self._stop.is_set():
                self._wake.wait(timeout=max(0.0, next_full - time.monotonic()))
                self._wake.clear()
                if self._stop.is_set():
                    break
                with self._lock:
                    games, self._pending = self._pending, set()
                if time.monotonic() >= next_full:
                    games, next_full = set(GAME_NAMES), time.monotonic() + self.period
                    self._keep_webhook(client)
                for game_name in sorted(games):
                    try:
                        self.last[game_name] = reconcile_game(
                            client, control, game_name, self.repository
                        )
                    except Exception:  # a pass must never end the loop
                        log.exception("reconciling %s failed", game_name)
        finally:
            if control is not None:
                control.close()

    def _keep_webhook(self, client: MlflowClient) -> None:
        if self._webhook_ready:
            return
        from cartridge.serving.webhooks import ensure_webhook

        try:
            ensure_webhook(client, self.webhook_url, self.webhook_secret)
            self._webhook_ready = True
        except Exception as error:  # MLflow down or refusing: the next pass tries again
            log.warning("could not register the MLflow webhook (retrying): %s", error)
