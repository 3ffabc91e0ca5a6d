"""The `cartridge` command line: a thin shell over the library."""

from __future__ import annotations

import functools
import json
import logging
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cartridge.logs import configure_logging

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    help="AlphaZero training, evaluation and serving for board games.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Throughput benchmarks (one core).")
shard_app = typer.Typer(no_args_is_help=True, help="Inspect replay shards.")
app.add_typer(bench_app, name="bench")
app.add_typer(shard_app, name="shard")

log = logging.getLogger("cartridge")
err_console = Console(stderr=True)


class GameName(StrEnum):
    tictactoe = "tictactoe"
    connect4 = "connect4"
    othello = "othello"


GameOption = Annotated[GameName, typer.Option("--game", "-g", help="Which game.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def _friendly_errors(command):
    """Bad input ends with one clear line and exit status 2, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (ValueError, FileNotFoundError, FileExistsError) as error:
            err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _game(name: GameName):
    from cartridge.games import load

    return load(name.value)


@app.callback()
def main(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING or ERROR.")] = "INFO",
    log_json: Annotated[bool, typer.Option(help="Structured JSON log lines.")] = False,
):
    configure_logging(log_level, log_json)


@app.command()
@_friendly_errors
def perft(game: GameOption, depth: Annotated[int, typer.Option(min=0, max=64)]):
    """Count positions exactly DEPTH plies from the start (finished games stop)."""
    from cartridge.games import perft as count_positions
    from cartridge.progress import progress_bar

    start = _game(game).new_initial_state()
    if depth == 0:
        typer.echo(1)
        return
    # Counted one first move at a time, only so that deep counts can show progress.
    actions = start.legal_actions()
    total = 0
    with progress_bar(f"perft {game.value} {depth}", len(actions), transient=True) as advance:
        for done, action in enumerate(actions, 1):
            total += count_positions(start.apply(action), depth - 1)
            advance(done)
    typer.echo(total)


@app.command()
@_friendly_errors
def selfplay(
    game: GameOption,
    games: Annotated[int, typer.Option(min=1, help="Games to play.")],
    sims: Annotated[int, typer.Option(min=1, help="Simulations per move.")],
    out: Annotated[Path, typer.Option(help="Directory for the replay shard.")],
    model: Annotated[str | None, typer.Option(help="ONNX model; uniform priors if absent.")] = None,
    evaluator: Annotated[str, typer.Option(help="uniform or rollout when no model.")] = "uniform",
    seed: Annotated[int, typer.Option(help="Seed for everything random.")] = 0,
    parallel: Annotated[int, typer.Option(min=1, help="Games searched together.")] = 64,
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime threads.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
):
    """Play GAMES self-play games and write one replay shard to OUT."""
    from cartridge.evaluators import make_evaluator
    from cartridge.progress import progress_bar
    from cartridge.replay import sha256_file, write_shard
    from cartridge.selfplay import SelfPlayConfig, play_selfplay

    g = _game(game)
    if (out / "metadata.json").exists():
        raise FileExistsError(f"{out} already holds a replay shard; shards are immutable")
    spec = model or evaluator
    leaf_evaluator = make_evaluator(spec, g, threads=threads, seed=seed)
    config = SelfPlayConfig.for_game(g, games, sims, parallel_games=parallel)
    with progress_bar(f"self-play {g.name}", games, enabled=not quiet) as advance:
        shard = play_selfplay(
            g,
            leaf_evaluator,
            config,
            seed=seed,
            model=spec,
            model_sha256=sha256_file(Path(model)) if model else None,
            on_game_end=advance,
        )
    write_shard(out, shard)
    m = shard.metadata
    log.info(
        "wrote shard %s: %d games, %d positions (X wins %d, draws %d, O wins %d)",
        out,
        m.games,
        m.positions,
        m.first_player_wins,
        m.draws,
        m.second_player_wins,
        extra={"shard": str(out), "positions": m.positions},
    )


@shard_app.command("inspect")
@_friendly_errors
def shard_inspect(directory: Path):
    """Verify a shard's checksums and print its metadata as JSON."""
    from cartridge.replay import read_shard

    typer.echo(read_shard(directory).metadata.model_dump_json(indent=2))


@app.command()
@_friendly_errors
def arena(
    game: GameOption,
    player1: Annotated[str, typer.Option(help="random, perfect, mcts, mcts:rollout, model:PATH")],
    player2: Annotated[str, typer.Option(help="Same choices as --player1.")],
    games: Annotated[int, typer.Option(min=1)] = 20,
    sims: Annotated[
        int, typer.Option(min=1, help="Simulations per move for search players.")
    ] = 200,
    seed: int = 0,
    opening_plies: Annotated[int | None, typer.Option(min=0, help="Random opening plies.")] = None,
    as_json: JsonFlag = False,
):
    """Play PLAYER1 against PLAYER2 with alternating seats; report player1's score."""
    from cartridge.arena import make_player, play_match
    from cartridge.progress import progress_bar

    g = _game(game)
    first = make_player(player1, g, sims, seed=seed)
    second = make_player(player2, g, sims, seed=seed + 1)
    with progress_bar(f"{player1} vs {player2}", games, enabled=not as_json) as advance:
        result = play_match(
            g, first, second, games, opening_plies=opening_plies, seed=seed, on_game_end=advance
        )
    if as_json:
        typer.echo(result.model_dump_json())
        return
    low, high = result.ci95
    typer.echo(
        f"{result.player1} vs {result.player2} on {g.name}: {result.wins} wins, "
        f"{result.draws} draws, {result.losses} losses; score {result.score:.3f} "
        f"(95% CI {low:.3f}-{high:.3f}), {_elo_text(result.elo_diff)}"
    )


@app.command("init-model")
@_friendly_errors
def init_model(
    game: GameOption,
    out: Annotated[Path, typer.Option(help="Where to write the .onnx file.")],
    blocks: Annotated[int | None, typer.Option(help="ResNet blocks.")] = None,
    channels: Annotated[int | None, typer.Option(help="ResNet channels.")] = None,
    seed: int = 0,
):
    """Export a freshly initialised policy-value network as ONNX."""
    import torch

    from cartridge.networks import build_network, default_network_config, export_onnx

    g = _game(game)
    config = default_network_config(g)
    overrides = {k: v for k, v in (("blocks", blocks), ("channels", channels)) if v is not None}
    if overrides:
        config = config.model_copy(update={"kind": "resnet", **overrides})
        config = type(config).model_validate(config.model_dump())
    torch.manual_seed(seed)
    export_onnx(build_network(g, config), g, out)
    log.info("wrote %s (%s)", out, config.model_dump_json())


@bench_app.command("mcts")
@_friendly_errors
def bench_mcts(
    game: GameOption,
    sims: Annotated[int, typer.Option(min=1, help="Simulations per tree.")] = 800,
    trees: Annotated[int, typer.Option(min=1, help="Trees searched together.")] = 64,
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    as_json: JsonFlag = False,
):
    """Search simulations per second (uniform evaluator) vs a dict-based Python PUCT."""
    from cartridge.benchmarking.search import baseline_runs
    from cartridge.benchmarking.search import bench_mcts as run
    from cartridge.progress import progress_bar

    total = repeats + baseline_runs(repeats)
    with progress_bar(f"bench mcts {game.value}", total, transient=True) as advance:
        report = run(_game(game), sims, trees=trees, repeats=repeats, on_run_end=advance)
    _print_result(report, as_json)


@bench_app.command("selfplay")
@_friendly_errors
def bench_selfplay(
    game: GameOption,
    model: Annotated[Path, typer.Option(help="ONNX model to evaluate with.")],
    games: Annotated[int, typer.Option(min=1)] = 256,
    sims: Annotated[int, typer.Option(min=1)] = 100,
    parallel: Annotated[int, typer.Option(min=1, help="Games per batch.")] = 64,
    threads: Annotated[int, typer.Option(min=1)] = 1,
    as_json: JsonFlag = False,
):
    """Self-play evaluation throughput vs raw onnxruntime at the same batch size."""
    from cartridge.benchmarking.search import bench_selfplay as run
    from cartridge.progress import progress_bar

    with progress_bar(f"bench selfplay {game.value}", games, transient=True) as advance:
        report = run(
            _game(game),
            str(model),
            games=games,
            simulations=sims,
            parallel_games=parallel,
            threads=threads,
            on_game_end=advance,
        )
    _print_result(report, as_json)


def _elo_text(elo: float) -> str:
    if math.isinf(elo):
        return "Elo difference unbounded (one side scored every point)"
    return f"Elo {round(elo) or 0:+d}"


def _print_result(result: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:>36}: {value}")
