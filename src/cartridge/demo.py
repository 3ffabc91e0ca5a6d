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

from rich.console import Console

from cartridge.names import CHAMPION, version_uri
from cartridge.run_progress import PipelineProgress
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
        progress = PipelineProgress(
            client, settings.game, int(time.time() * 1000), settings.train_steps, console
        )
        command = [
            sys.executable,
            "-m",
            "cartridge",
            "pipeline",
            "run",
            "--local",
            "--verbose",  # the whole kfp.local log into this run's log file
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
        champion = alias_version(client, settings.game, CHAMPION)
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
