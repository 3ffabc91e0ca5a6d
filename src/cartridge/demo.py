"""The main job on one machine: run the pipeline locally until TicTacToe is solved.

`make demo` calls `run_demo`: the local stack comes up, then pipeline runs (each a few
unrolled iterations under kfp.local, in a child process whose verbose log goes to a
file) follow each other until the champion loses no line of perfect play from either
seat, or the time budget is spent. Progress comes from MLflow, polled while the
pipeline runs: which iteration is training, its step and loss, each arena verdict.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from rich.console import Console

from cartridge.names import CHAMPION, experiment_name, registered_model_name, version_uri
from cartridge.stack import StackConfig, client_environment, up
from cartridge.tracking import alias_version

console = Console(highlight=False)


@dataclass
class DemoSettings:
    game: str = "tictactoe"
    iterations_per_run: int = 2
    max_runs: int = 5
    budget_seconds: float = 14 * 60
    shards: int = 2
    games_per_shard: int = 256
    simulations: int = 200
    train_steps: int = 800
    batch_size: int = 256
    arena_games: int = 40
    arena_simulations: int = 64
    check_simulations: int = 200  # the web UI's default level


@dataclass
class DemoResult:
    champion: str | None
    perfect: bool
    lines: int
    losses: int
    runs: int
    seconds: float


class _Progress:
    """Prints what changed in MLflow since the last poll."""

    def __init__(self, client: MlflowClient, game: str, since_ms: int, steps: int):
        self.client, self.game, self.since_ms, self.steps = client, game, since_ms, steps
        self.seen: dict[str, str] = {}

    def poll(self) -> None:
        experiment = self.client.get_experiment_by_name(experiment_name(self.game))
        if experiment is None:
            return
        runs = self.client.search_runs(
            [experiment.experiment_id],
            f"attributes.start_time >= {self.since_ms}",
            order_by=["attributes.start_time ASC"],
        )
        for run in runs:
            if run.data.tags.get("kind") == "pipeline":
                continue
            iteration = run.data.tags.get("iteration", "?")
            history = self.client.get_metric_history(run.info.run_id, "loss")
            step = max((m.step for m in history), default=0)
            loss = run.data.metrics.get("loss")
            state = f"{run.info.status}:{step}"
            if self.seen.get(run.info.run_id) != state:
                self.seen[run.info.run_id] = state
                loss_text = f", loss {loss:.3f}" if loss is not None else ""
                console.print(
                    f"  iteration {iteration}: training step {step}/{self.steps}"
                    f"{loss_text} ({run.info.status.lower()})"
                )
        name = registered_model_name(self.game)
        try:
            versions = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return
        for version in versions:
            gate = version.tags.get("gate")
            key = f"gate:{version.version}"
            if gate and int(version.creation_timestamp) >= self.since_ms and key not in self.seen:
                self.seen[key] = gate
                console.print(
                    f"  arena v{version.version} vs {version.tags.get('arena_opponent')}"
                    f": {version.tags.get('arena_wins')}W {version.tags.get('arena_draws')}D"
                    f" {version.tags.get('arena_losses')}L; {gate}"
                )


def _champion(client: MlflowClient, game: str) -> str | None:
    return alias_version(client, game, CHAMPION)


def run_demo(stack: StackConfig, settings: DemoSettings) -> DemoResult:
    from cartridge.arena import make_player
    from cartridge.arena.accuracy import losses_to_perfect_play
    from cartridge.games import load
    from cartridge.tracking import use_tracking

    began = time.monotonic()
    up(stack)
    os.environ.update(client_environment(stack))
    env = dict(os.environ)
    client = use_tracking(stack.mlflow_url)
    game = load(settings.game)
    logs = stack.home / "demo"
    logs.mkdir(parents=True, exist_ok=True)
    lines = losses = -1
    champion = None
    for run in range(1, settings.max_runs + 1):
        log_path = logs / f"pipeline-{run}.log"
        console.print(
            f"[bold]pipeline run {run}[/bold]: {settings.iterations_per_run} "
            f"iterations of {settings.shards}x{settings.games_per_shard} self-play "
            f"games, {settings.train_steps} training steps (log: {log_path})"
        )
        progress = _Progress(client, settings.game, int(time.time() * 1000), settings.train_steps)
        command = [
            sys.executable,
            "-m",
            "cartridge",
            "pipeline",
            "run",
            "--local",
            "--game",
            settings.game,
            "--iterations",
            str(settings.iterations_per_run),
            "--shards",
            str(settings.shards),
            "--games-per-shard",
            str(settings.games_per_shard),
            "--sims",
            str(settings.simulations),
            "--train-steps",
            str(settings.train_steps),
            "--batch-size",
            str(settings.batch_size),
            "--arena-games",
            str(settings.arena_games),
            "--arena-sims",
            str(settings.arena_simulations),
            "--seed",
            str(run),
        ]
        with open(log_path, "w") as log_file:
            child = subprocess.Popen(
                command,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                stdin=subprocess.DEVNULL,
            )
            while child.poll() is None:
                time.sleep(2)
                progress.poll()
        progress.poll()
        if child.returncode != 0:
            raise RuntimeError(f"pipeline run {run} failed; see {log_path}")
        champion = _champion(client, settings.game)
        if champion is not None:
            player = make_player(
                version_uri(settings.game, champion),
                game,
                settings.check_simulations,
            )
            lines, losses = losses_to_perfect_play(game, player)
            console.print(
                f"  champion v{champion} with {settings.check_simulations} "
                f"simulations: {losses} losses in {lines} lines of perfect play "
                "(both seats)"
            )
            if losses == 0:
                break
        if time.monotonic() - began > settings.budget_seconds:
            console.print("time budget spent")
            break
    if champion is not None:
        # Idempotent: makes sure the champion in Triton's repository is in the format of
        # this server and loaded, also for a state directory made by an older version.
        from cartridge.promotion import promote

        promote(client, settings.game, champion)
    return DemoResult(
        champion=champion,
        perfect=losses == 0,
        lines=lines,
        losses=losses,
        runs=run,
        seconds=time.monotonic() - began,
    )
