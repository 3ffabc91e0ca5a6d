"""The `cartridge` command line: a thin shell over the library."""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import sys
import tempfile
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

# typer (pinned) parses with its own copy of click; its errors are these classes.
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from cartridge.deploy.images import PIPELINE_IMAGE, TRAINING_IMAGE
from cartridge.logs import configure_logging, current_logging_config
from cartridge.names import CHAMPION, alias_uri, registered_model_name


class OneLineErrors(TyperGroup):
    """Bad input on the command line ends with one line and exit status 2, as errors
    inside a command do (`_friendly_errors`), instead of click's usage box."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as error:
            error.show()  # a bare command or group prints its help
            sys.exit(error.exit_code)
        except ClickException as error:
            err_console.print(
                f"[red]error:[/red] {error.format_message()}", highlight=False, soft_wrap=True
            )
            sys.exit(error.exit_code)
        except typer.Abort:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    no_args_is_help=True,
    add_completion=False,
    help="AlphaZero training, evaluation and serving for board games.",
)
bench_app = typer.Typer(no_args_is_help=True, help="Throughput benchmarks (one core).")
shard_app = typer.Typer(no_args_is_help=True, help="Inspect replay shards.")
app.add_typer(bench_app, name="bench")
stack_app = typer.Typer(no_args_is_help=True, help="Local S3 store and MLflow server.")
pipeline_app = typer.Typer(no_args_is_help=True, help="The Kubeflow AlphaZero pipeline.")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(shard_app, name="shard")
app.add_typer(stack_app, name="stack")

log = logging.getLogger("cartridge")
err_console = Console(stderr=True)


class GameName(StrEnum):
    tictactoe = "tictactoe"
    connect4 = "connect4"
    othello = "othello"


GameOption = Annotated[GameName, typer.Option("--game", "-g", help="Which game.")]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
RootSearch = StrEnum("RootSearch", {"puct": "puct", "gumbel": "gumbel"})
RootSearchOption = Annotated[
    RootSearch, typer.Option(help="The search's root: puct (AlphaZero) or gumbel.")
]
SolverFlag = Annotated[
    bool, typer.Option("--mcts-solver", help="Search with MCTS-solver (proven results) on.")
]
HomeOption = Annotated[
    Path | None, typer.Option("--home", help="State directory (default .cartridge).")
]
S3PortOption = Annotated[int | None, typer.Option("--s3-port", help="S3 API port.")]
MlflowPortOption = Annotated[int | None, typer.Option("--mlflow-port", help="MLflow port.")]
TritonPortOption = Annotated[
    int | None, typer.Option("--triton-port", help="Triton HTTP port (gRPC +1, metrics +2).")
]
WebPortOption = Annotated[int | None, typer.Option("--web-port", help="Web app port.")]


# The short names people type for some settings (each option also takes the setting's
# own name, e.g. --simulations or --sims).
SHORT_FLAGS = {
    "games_per_shard": ("--games",),
    "simulations": ("--sims",),
    "fast_simulations": ("--fast-sims",),
    "replay_window": ("--window",),
    "network_blocks": ("--blocks",),
    "network_channels": ("--channels",),
    "arena_games": ("--games",),
    "arena_simulations": ("--arena-sims", "--sims"),
    "gate_method": ("--method",),
    "gate_threshold": ("--threshold",),
    "gate_solver_z": ("--solver-z",),
    "retention_keep_versions": ("--keep-versions",),
    "retention_keep_iterations": ("--keep-iterations",),
    "retention_keep_failed_days": ("--keep-failed-days",),
    "retention_min_age_minutes": ("--min-age-minutes",),
}


def with_settings(*groups: str):
    """Give the command one option per field of each settings group (`selfplay`,
    `training`, `gate`), named, typed, explained and defaulted by the field; the command
    receives the validated settings objects by keyword (`selfplay=SelfPlaySettings`...).
    A bad value is refused with the option's name and one line."""
    from cartridge.settings import SETTING_GROUPS

    models = {key: SETTING_GROUPS[key] for key in groups}
    taken: set[str] = set()

    def option(model, name: str, field) -> tuple[str, inspect.Parameter]:
        flags = ["--" + name.replace("_", "-")]
        flags += [flag for flag in SHORT_FLAGS.get(name, ()) if flag not in taken]
        taken.update(flags)
        choices = model.choices(name)
        # typer offers a fixed set of values as an Enum (click shows and checks them).
        kind = StrEnum(name, {c: c for c in choices}) if choices else model.parameter_type(name)
        if kind is bool:  # an on/off pair, so a default of on can be turned off too
            flags[0] += "/--no-" + flags[0].removeprefix("--")
        parameter = inspect.Parameter(
            f"setting__{name}",
            inspect.Parameter.KEYWORD_ONLY,
            default=kind(field.default) if choices else field.default,
            annotation=Annotated[kind, typer.Option(*flags, help=field.description)],
        )
        return "' / '".join(flags), parameter

    def decorate(command):
        signature = inspect.signature(command, eval_str=True)
        kept = [p for p in signature.parameters.values() if p.name not in models]
        hints: dict[str, str] = {}
        added = []
        for model in models.values():
            for name, field in model.parameter_fields().items():
                hints[name], parameter = option(model, name, field)
                added.append(parameter)

        @functools.wraps(command)
        def wrapper(**kwargs):
            from pydantic import ValidationError

            from cartridge.settings import problems

            built = {}
            for key, model in models.items():
                values = {
                    name: getattr(value, "value", value)  # an Enum choice as its text
                    for name in model.parameter_fields()
                    for value in [kwargs.pop(f"setting__{name}")]
                }
                try:
                    built[key] = model.model_validate(values)
                except ValidationError as error:
                    raise UsageError(_option_problems(problems(error, model), hints)) from None
            return command(**kwargs, **built)

        wrapper.__signature__ = signature.replace(parameters=[*kept, *added])
        return wrapper

    return decorate


def _option_problems(found: list[str], hints: dict[str, str]) -> str:
    """'name: message' lines as one line that names the options people type."""
    lines = []
    for line in found:
        name, separator, message = line.partition(": ")
        if separator and name in hints:
            lines.append(f"Invalid value for '{hints[name]}': {message}")
        else:
            lines.append(line)
    return "; ".join(lines)


def _friendly_errors(command):
    """Bad input ends with one clear line and exit status 2, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):  # click's own exits are RuntimeErrors too
            raise
        except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as error:
            err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as error:
            reason = _registry_refusal(error)
            if reason is None:
                raise
            err_console.print(f"[red]error:[/red] {reason}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def _registry_refusal(error: Exception) -> str | None:
    """The registry's own sentence for what it refused (a version or alias that does
    not exist, a bad name); None for anything else. MLflow is imported only by the
    commands that use it, so its exception type is matched by module."""
    if not type(error).__module__.startswith("mlflow."):
        return None
    message = getattr(error, "message", None) or str(error)
    return f"MLflow registry: {message.strip().splitlines()[0]}"


def _connect(home: Path | None = None):
    """Point MLflow and S3 clients at the running local stack, unless the environment
    already names servers (a cluster's MLflow and MinIO). Returns the stack config."""
    from cartridge.stack import StackConfig, use_running_stack

    config = StackConfig.from_env(**({"home": home} if home else {}))
    use_running_stack(config)
    return config


def _tracking_client(stack, explicit_uri: str | None = None):
    """MLflow for this process: explicit URI, MLFLOW_TRACKING_URI, or embedded under home."""
    from cartridge.tracking import resolve_tracking_uri, use_tracking

    return use_tracking(resolve_tracking_uri(stack.home, explicit_uri))


def _game(name: GameName):
    from cartridge.games import load

    return load(name.value)


@app.callback()
def main(
    log_level: Annotated[
        str, typer.Option(envvar="CARTRIDGE_LOG_LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    log_json: Annotated[
        bool, typer.Option(envvar="CARTRIDGE_LOG_JSON", help="Structured JSON log lines.")
    ] = False,
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
@with_settings("selfplay")
def selfplay(
    game: GameOption,
    out: Annotated[str, typer.Option(help="Directory or s3:// prefix for the replay shard.")],
    selfplay,
    model: Annotated[str | None, typer.Option(help="ONNX model; uniform priors if absent.")] = None,
    evaluator: Annotated[
        str, typer.Option(help="uniform, rollout or triton[:grpc://HOST:PORT] when no model.")
    ] = "uniform",
    seed: Annotated[int, typer.Option(help="Seed for everything random.")] = 0,
    parallel: Annotated[int, typer.Option(min=1, help="Games searched together.")] = 64,
    threads: Annotated[int, typer.Option(min=1, help="onnxruntime threads.")] = 1,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
):
    """Play self-play games and write one replay shard to OUT."""
    from cartridge import storage
    from cartridge.progress import progress_bar
    from cartridge.shard_writer import write_selfplay_shard

    if storage.is_s3(out):
        _connect()
    with progress_bar(f"self-play {game.value}", selfplay.games, enabled=not quiet) as advance:
        m = write_selfplay_shard(
            game.value,
            out,
            selfplay,
            model=model,
            evaluator=evaluator,
            seed=seed,
            parallel_games=parallel,
            threads=threads,
            on_game_end=advance,
        )
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
def shard_inspect(location: str):
    """Verify a shard's checksums (local dir or s3:// prefix) and print its metadata as JSON."""
    from cartridge.training.data import open_shard

    _connect()
    with tempfile.TemporaryDirectory(prefix="cartridge-inspect-") as workdir:
        shard = open_shard(location, Path(workdir))
    typer.echo(shard.metadata.model_dump_json(indent=2))


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
    solver_positions: Annotated[
        int, typer.Option(min=0, help="Connect 4: solver-checked positions for player1.")
    ] = 200,
    mcts_solver: SolverFlag = False,
    root_search: RootSearchOption = RootSearch.puct,
    as_json: JsonFlag = False,
):
    """Play PLAYER1 against PLAYER2 with alternating seats; report player1's score."""
    from cartridge.arena import make_player, play_match
    from cartridge.progress import progress_bar

    stack = _connect()
    if any(spec.startswith("models:/") for spec in (player1, player2)):
        _tracking_client(stack)
    g = _game(game)
    search = {"solver": mcts_solver, "root_search": root_search.value}
    first = make_player(player1, g, sims, seed=seed, **search)
    second = make_player(player2, g, sims, seed=seed + 1, **search)
    with progress_bar(f"{player1} vs {player2}", games, enabled=not as_json) as advance:
        result = play_match(
            g, first, second, games, opening_plies=opening_plies, seed=seed, on_game_end=advance
        )
    if g.name == "connect4" and player1 not in ("random", "perfect") and solver_positions:
        from cartridge.arena.accuracy import add_solver_accuracy

        add_solver_accuracy(result, first, g, solver_positions)
    if as_json:
        typer.echo(result.model_dump_json())
        return
    low, high = result.ci95
    typer.echo(
        f"{result.player1} vs {result.player2} on {g.name}: {result.wins} wins, "
        f"{result.draws} draws, {result.losses} losses; score {result.score:.3f} "
        f"(95% CI {low:.3f}-{high:.3f}), {_elo_text(result.elo_diff)}"
    )
    if result.solver_optimal_fraction is not None:
        typer.echo(
            f"{result.player1} plays the solver's best move in "
            f"{result.solver_optimal_fraction:.1%} of {result.solver_positions} positions "
            f"and keeps the game's result in {result.solver_result_fraction:.1%}"
        )


@app.command()
@_friendly_errors
@with_settings("gate")
def gate(
    game: GameOption,
    gate,
    promote: Annotated[bool, typer.Option(help="Promote when the gate passes.")] = False,
    seed: int = 0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI.")] = None,
    as_json: JsonFlag = False,
):
    """Challenger vs champion (vs random while there is none), then the promotion gate."""
    from cartridge import promotion
    from cartridge.arena.gate import evaluate_challenger

    client = _tracking_client(_connect(), tracking_uri)
    match, decision, version = evaluate_challenger(client, game.value, gate, seed)
    if gate.round_robin:
        from cartridge.arena.ratings import play_round_robin

        play_round_robin(client, game.value, gate.round_robin, gate.games, gate.simulations, seed)
    report = {
        "challenger": version,
        "match": match.model_dump() if match else None,
        "decision": decision.model_dump(),
        "promotion": None,
    }
    if promote and decision.promote:
        report["promotion"] = promotion.promote(
            client, game.value, version, match, decision
        ).model_dump()
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(
        f"challenger v{version}: {decision.reason}; "
        f"{'promote' if decision.promote else 'keep the champion'}"
    )
    if report["promotion"]:
        typer.echo(f"champion is now v{report['promotion']['champion']}")


@app.command("reconcile")
@_friendly_errors
def reconcile_command(
    game: Annotated[
        GameName | None, typer.Option("--game", "-g", help="One game (default: all).")
    ] = None,
    every: Annotated[
        float, typer.Option(min=0, help="Repeat every N seconds until stopped (0: one pass).")
    ] = 0,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI.")] = None,
    serve: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=65535,
            help="Run as a service on this port instead: passes every "
            "CARTRIDGE_RECONCILE_SECONDS (30), MLflow's webhook route, /healthz, /metrics.",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to bind with --serve.")] = "127.0.0.1",
    as_json: JsonFlag = False,
):
    """Make Triton serve what the registry's `champion` aliases name: publish, withdraw,
    load or unload, as needed (what the web app does every 30 s and on MLflow webhooks)."""
    import time

    if serve is not None:
        import uvicorn

        uvicorn.run(
            "cartridge.web.app:create_reconciler_app",
            factory=True,
            host=host,
            port=serve,
            log_config=current_logging_config(),
        )
        return

    from cartridge.serving.reconcile import reconcile
    from cartridge.serving.triton import TritonControl, triton_url

    client = _tracking_client(_connect(), tracking_uri)
    url = triton_url()
    control = TritonControl(url) if url else None
    games = (game.value,) if game else None
    try:
        while True:
            outcomes = reconcile(client, control, games)
            if as_json:
                typer.echo(json.dumps([o.model_dump() for o in outcomes]))
            for o in [] if as_json else outcomes:
                state = "in sync" if o.in_sync and not (o.refused or o.error) else "NOT served"
                done = "; ".join(o.actions) or "nothing to do"
                why = f" ({o.refused or o.error})" if o.refused or o.error else ""
                typer.echo(
                    f"{o.game}: champion v{o.champion or '-'}, Triton v{o.served or '-'}, "
                    f"{state}{why}; {done}"
                )
            if not every:
                break
            time.sleep(every)
    finally:
        if control is not None:
            control.close()


@app.command("gc")
@_friendly_errors
@with_settings("retention")
def gc_command(
    retention,
    game: Annotated[
        GameName | None, typer.Option("--game", "-g", help="One game (default: all).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List what would be deleted; delete nothing.")
    ] = False,
    replay_root: Annotated[
        str | None, typer.Option(help="Replay shards (default s3://$CARTRIDGE_BUCKET/replay).")
    ] = None,
    checkpoint_root: Annotated[
        str | None,
        typer.Option(help="Training checkpoints (default s3://$CARTRIDGE_BUCKET/checkpoints)."),
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI.")] = None,
    as_json: JsonFlag = False,
):
    """Delete what no game needs any more from S3, the registry and the Triton
    repository: old never-champion versions, replay outside every run's window,
    checkpoints of finished runs, interrupted uploads. Safe while training and
    promotion run; --dry-run lists instead."""
    from cartridge.games import GAME_NAMES
    from cartridge.retention import collect

    stack = _connect()
    client = _tracking_client(stack, tracking_uri)
    bucket = os.environ.get("CARTRIDGE_BUCKET", stack.bucket)
    report = collect(
        client,
        [game.value] if game else list(GAME_NAMES),
        retention,
        replay_root=replay_root or f"s3://{bucket}/replay",
        checkpoint_root=checkpoint_root or f"s3://{bucket}/checkpoints",
        dry_run=dry_run,
    )
    typer.echo(report.model_dump_json() if as_json else report.summary())
    if report.errors:
        raise typer.Exit(1)


@app.command("promote")
@_friendly_errors
def promote_command(
    game: GameOption,
    version: Annotated[str | None, typer.Option(help="Version (default: challenger).")] = None,
    rollback: Annotated[bool, typer.Option(help="Restore the previous champion.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI.")] = None,
    as_json: JsonFlag = False,
):
    """Make a version champion and publish it to Triton, or --rollback to the previous one."""
    from cartridge import promotion

    client = _tracking_client(_connect(), tracking_uri)
    if rollback:
        if version:
            raise ValueError("--rollback restores the previous champion; it takes no --version")
        result = promotion.rollback(client, game.value)
    else:
        result = promotion.promote(client, game.value, version)
    if as_json:
        typer.echo(result.model_dump_json())
    else:
        typer.echo(
            f"{registered_model_name(game.value)}: champion v{result.champion}, previous "
            f"{'v' + result.previous if result.previous else 'none'}; Triton model "
            f"{result.triton_model}"
        )


@app.command()
@_friendly_errors
def demo(
    iterations_per_run: Annotated[int, typer.Option(min=1)] = 2,
    max_runs: Annotated[int, typer.Option(min=1)] = 5,
    budget_minutes: Annotated[float, typer.Option(min=1)] = 14,
):
    """Run the pipeline locally on TicTacToe until the champion plays perfectly."""
    from cartridge.demo import DemoSettings, run_demo

    stack = _connect()
    settings = DemoSettings(
        iterations_per_run=iterations_per_run, max_runs=max_runs, budget_seconds=budget_minutes * 60
    )
    result = run_demo(stack, settings)
    verdict = "plays perfectly" if result.perfect else f"still lost {result.losses} lines"
    typer.echo(
        f"\nchampion: cartridge-tictactoe version {result.champion} ({verdict}) after "
        f"{result.runs} pipeline run(s), {result.seconds / 60:.1f} minutes"
    )
    typer.echo(f"Play it in the browser: {stack.web_url}  (API docs: {stack.web_url}/docs)")
    typer.echo(f"MLflow (runs, metrics, registry): {stack.mlflow_url}")
    typer.echo(
        f"Triton: {stack.triton_url} serving cartridge_tictactoe from "
        f"s3://{stack.bucket}/triton/cartridge_tictactoe/ (metrics {stack.triton_metrics_url})"
    )
    typer.echo(
        "Or in the terminal: .venv/bin/cartridge play --game tictactoe "
        "--against models:/cartridge-tictactoe@champion"
    )
    typer.echo("Stop the stack: .venv/bin/cartridge stack down")
    if not result.perfect:
        raise typer.Exit(1)


@app.command()
@_friendly_errors
def play(
    game: GameOption,
    against: Annotated[
        str | None, typer.Option(help="Player spec (default: the game's champion).")
    ] = None,
    sims: Annotated[int, typer.Option(min=1, help="Bot simulations per move.")] = 200,
    second: Annotated[bool, typer.Option(help="Let the bot move first.")] = False,
):
    """Play a game against the champion (or any arena player) in the terminal."""
    from cartridge.arena import make_player
    from cartridge.arena.interactive import play_against

    stack = _connect()
    spec = against or alias_uri(game.value, CHAMPION)
    if spec.startswith("models:/"):
        _tracking_client(stack)
    g = _game(game)
    result = play_against(g, make_player(spec, g, sims), int(second), typer.prompt, typer.echo)
    typer.echo({1.0: "you win", 0.0: "draw", -1.0: "you lose"}[result])


@app.command()
@_friendly_errors
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to bind.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
):
    """Serve the web API and the browser UI (Triton and MLflow from `cartridge stack env`)."""
    import uvicorn

    uvicorn.run(
        "cartridge.web:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=current_logging_config(),
    )


@app.command("validate")
@_friendly_errors
def validate_command(
    root: Annotated[Path, typer.Option(help="Repository root.")] = Path("."),
    tools: Annotated[Path, typer.Option(help="bin folder of the checkers' virtualenv.")] = Path(
        ".venv-tools/bin"
    ),
    out: Annotated[Path, typer.Option(help="Renders and scanner cache.")] = Path("build/validate"),
    as_json: JsonFlag = False,
):
    """Check the Kubernetes manifests, Dockerfiles and workflows offline (make validate)."""
    from cartridge.deploy.validate import ToolMissing, validate

    def report(result):
        if as_json:
            return
        mark = "[green]ok[/green]  " if result.ok else "[red]FAIL[/red]"
        err_console.print(f"{mark} {result.name}", highlight=False)
        if not result.ok:
            err_console.print(result.output, highlight=False, markup=False, soft_wrap=True)

    try:
        results = validate(root, tools, out, on_result=report)
    except ToolMissing as error:
        raise ValueError(str(error)) from None
    if as_json:
        typer.echo(json.dumps([r.__dict__ for r in results]))
    failed = [r.name for r in results if not r.ok]
    if failed:
        err_console.print(f"[red]{len(failed)} check(s) failed:[/red] {', '.join(failed)}")
        raise typer.Exit(1)
    if not as_json:
        rendered = out / "rendered"
        err_console.print(f"all {len(results)} checks passed; renders in {rendered}/")


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

    from cartridge.networks import build_network, export_onnx, network_for

    g = _game(game)
    config = network_for(g.name, blocks, channels)
    torch.manual_seed(seed)
    export_onnx(build_network(g, config), g, out)
    log.info("wrote %s (%s)", out, config.model_dump_json())


@app.command()
@_friendly_errors
def train(
    game: Annotated[GameName | None, typer.Option("--game", "-g", help="Game to train.")] = None,
    shard: Annotated[list[str] | None, typer.Option(help="Shard dir or s3:// prefix.")] = None,
    replay: Annotated[str | None, typer.Option(help="Replay root with iteration dirs.")] = None,
    window: Annotated[int, typer.Option(min=1, help="Last K iterations of --replay.")] = 4,
    steps: Annotated[int, typer.Option(min=1)] = 1000,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    lr: Annotated[float, typer.Option(help="Peak learning rate (cosine decay).")] = 1e-3,
    weight_decay: float = 1e-4,
    grad_clip: float = 1.0,
    seed: int = 0,
    blocks: Annotated[int | None, typer.Option(help="ResNet blocks.")] = None,
    channels: Annotated[int | None, typer.Option(help="ResNet channels.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    checkpoint_every: Annotated[int, typer.Option(min=1)] = 100,
    log_every: Annotated[int, typer.Option(min=1)] = 10,
    reanalyse_fraction: Annotated[
        float, typer.Option(help="Share of each batch searched again for fresh targets.")
    ] = 0.0,
    reanalyse_sims: Annotated[int, typer.Option(help="Simulations per reanalysis.")] = 32,
    checkpoint_dir: Annotated[
        str | None, typer.Option(help="Local dir or s3:// prefix for checkpoints.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --checkpoint-dir.")] = False,
    init_checkpoint: Annotated[str | None, typer.Option(help="Start from these weights.")] = None,
    iteration: Annotated[int, typer.Option(min=0, help="Loop iteration (a tag).")] = 0,
    pipeline_run_id: Annotated[str | None, typer.Option(help="KFP run id (a tag).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow URI.")] = None,
    register: Annotated[bool, typer.Option(help="Register the model version.")] = True,
    home: HomeOption = None,
    quiet: Annotated[bool, typer.Option(help="No progress bar.")] = False,
    as_json: JsonFlag = False,
):
    """Train on replay shards, export and verify ONNX, log to MLflow, register a challenger."""
    from datetime import UTC, datetime

    from cartridge.networks import network_for
    from cartridge.progress import progress_bar
    from cartridge.tracking import resolve_tracking_uri
    from cartridge.training import Preempted, TrainConfig, resolve_window
    from cartridge.training import train as run_training

    stack = _connect(home)
    if resume:
        if not checkpoint_dir:
            raise ValueError("--resume needs the --checkpoint-dir of the run to continue")
        config, shards = None, []
    else:
        if game is None:
            raise ValueError("--game is required (except with --resume)")
        if bool(shard) == bool(replay):
            raise ValueError("give either --shard (one or more) or --replay with --window")
        g = _game(game)
        network = network_for(g.name, blocks, channels)
        config = TrainConfig(
            game=g.name,
            steps=steps,
            batch_size=batch_size,
            learning_rate=lr,
            weight_decay=weight_decay,
            grad_clip=grad_clip,
            seed=seed,
            device=device,
            checkpoint_every=checkpoint_every,
            log_every=log_every,
            network=network,
            reanalyse_fraction=reanalyse_fraction,
            reanalyse_simulations=reanalyse_sims,
        )
        shards = list(shard) if shard else resolve_window(replay, window)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        checkpoint_dir = checkpoint_dir or str(stack.home / "checkpoints" / f"{g.name}-{stamp}")
    total = config.steps if config else 0
    with progress_bar("train", total or 1, enabled=not (quiet or as_json or resume)) as advance:
        try:
            result = run_training(
                config,
                shards,
                checkpoint_dir=checkpoint_dir,
                tracking_uri=resolve_tracking_uri(stack.home, tracking_uri),
                resume=resume,
                iteration=iteration,
                pipeline_run_id=pipeline_run_id,
                init_checkpoint=init_checkpoint,
                register=register,
                on_step=advance,
            )
        except Preempted as stop:
            err_console.print(
                f"preempted: {stop}; continue with --resume", highlight=False, soft_wrap=True
            )
            raise typer.Exit(143) from None
    report = {
        "run_id": result.run_id,
        "steps": result.steps,
        "checkpoint": result.checkpoint,
        "model_uri": result.model_uri,
        "model_version": result.model_version,
        "metrics": result.metrics,
    }
    if as_json:
        typer.echo(json.dumps(report))
    else:
        typer.echo(
            f"run {result.run_id}: {result.steps} steps, loss "
            f"{result.metrics.get('loss', float('nan')):.4f}; checkpoint "
            f"{result.checkpoint}; registered version {result.model_version}"
        )


def with_stack_config(command):
    """Give a `stack` command the options that locate the local stack (home folder and
    ports); it receives the resulting StackConfig as `config`."""
    options = {
        "home": HomeOption,
        "s3_port": S3PortOption,
        "mlflow_port": MlflowPortOption,
        "triton_port": TritonPortOption,
        "web_port": WebPortOption,
    }
    signature = inspect.signature(command, eval_str=True)
    kept = [p for p in signature.parameters.values() if p.name != "config"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
        for name, kind in options.items()
    ]

    @functools.wraps(command)
    def wrapper(**kwargs):
        from cartridge.stack import StackConfig

        given = {name: kwargs.pop(name) for name in options}
        config = StackConfig.from_env(**{k: v for k, v in given.items() if v is not None})
        return command(config=config, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*kept, *added])
    return wrapper


def _print_stack(report: dict, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({name: s.model_dump() for name, s in report.items()}))
        return
    for name, service in report.items():
        state = "healthy" if service.healthy else "DOWN"
        pid = service.pid if service.pid is not None else "-"
        typer.echo(f"{name:<8} {state:<8} pid {pid!s:<8} {service.url}")


@stack_app.command("up")
@_friendly_errors
@with_stack_config
def stack_up(config, as_json: JsonFlag = False):
    """Start the S3 store, MLflow, Triton and the web app (idempotent); wait until healthy."""
    from cartridge.stack import up

    report = up(config)
    _print_stack(report, as_json)
    if not as_json:
        typer.echo(
            f"\nPlay in the browser: {config.web_url}\nAPI docs: {config.web_url}/docs\n"
            f"MLflow UI: {config.mlflow_url}\nTriton: {config.triton_url} (gRPC "
            f"{config.triton_grpc_url}, metrics {config.triton_metrics_url})\n"
            f"S3 endpoint: {config.s3_url} (bucket {config.bucket})\n"
            f'Client settings: eval "$(cartridge stack env)"'
        )


@stack_app.command("down")
@_friendly_errors
@with_stack_config
def stack_down(config):
    """Stop the servers this stack started; their data stays."""
    from cartridge.stack import down

    stopped = down(config)
    typer.echo(f"stopped: {', '.join(stopped)}" if stopped else "nothing was running")


@stack_app.command("status")
@_friendly_errors
@with_stack_config
def stack_status(config, as_json: JsonFlag = False):
    """Each server's health, PID and URL."""
    from cartridge.stack import status

    _print_stack(status(config), as_json)


@stack_app.command("env")
@_friendly_errors
@with_stack_config
def stack_env(config):
    """Shell exports that point MLflow, S3 and Triton clients at the local stack."""
    import shlex

    from cartridge.stack import client_environment

    for key, value in client_environment(config).items():
        typer.echo(f"export {key}={shlex.quote(value)}")


IterationsOption = Annotated[
    int, typer.Option(min=1, help="Iterations unrolled into the pipeline.")
]
ImageOption = Annotated[
    str,
    typer.Option(help="Image of every step but training (a version tag or @sha256 digest)."),
]
TrainingImageOption = Annotated[
    str,
    typer.Option(help="Training step's image, CUDA torch (a version tag or @sha256 digest)."),
]
TrainingGpusOption = Annotated[
    int,
    typer.Option(
        min=0, max=16, help="GPUs the training step requests (0: none, it trains on the CPU)."
    ),
]


@pipeline_app.command("compile")
@_friendly_errors
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="Directory for the pipeline YAML.")],
    iterations: IterationsOption = 3,
    image: ImageOption = PIPELINE_IMAGE,
    training_image: TrainingImageOption = TRAINING_IMAGE,
    training_gpus: TrainingGpusOption = 1,
):
    """Write the pipeline YAML for the KFP UI (or kfp.Client). Images default to this
    release's (`cartridge.deploy.images`)."""
    from kfp_pipelines.runner import compile_pipeline

    typer.echo(compile_pipeline(out, iterations, image, training_image, training_gpus))


RunSettings = ("selfplay", "training", "gate")
ShardsOption = Annotated[int, typer.Option(min=1, help="Self-play shards per iteration.")]


def _pipeline_arguments(
    game: GameName, shards: int, seed: int, seed_with_run_id: bool, endpoints, **groups
) -> dict:
    """A run's pipeline arguments from the settings a command built."""
    arguments = {
        "game": game.value,
        "shards": list(range(shards)),
        "seed": seed,
        "seed_with_run_id": seed_with_run_id,
    }
    for settings in (*groups.values(), endpoints):
        arguments.update(settings.parameters())
    return arguments


@pipeline_app.command("run")
@_friendly_errors
@with_settings(*RunSettings)
def pipeline_run(
    selfplay,
    training,
    gate,
    local: Annotated[bool, typer.Option("--local", help="Run here with kfp.local.")] = False,
    game: GameOption = GameName.tictactoe,
    iterations: IterationsOption = 3,
    shards: ShardsOption = 2,
    seed: int = 0,
    verbose: Annotated[
        bool, typer.Option(help="kfp.local's own log on the terminal, not in a file.")
    ] = False,
    selfplay_triton: Annotated[
        bool,
        typer.Option(
            "--selfplay-triton",
            help="Self-play sends its network calls to the stack's Triton (gRPC).",
        ),
    ] = False,
):
    """Run the pipeline with kfp.local against the local stack (`cartridge stack up`):
    progress here, kfp.local's full log in a file (`--verbose`: all of it here). Local
    runs are reproducible from `--seed`; cluster runs also mix in their run id."""
    import time

    from cartridge.run_progress import PipelineProgress
    from cartridge.settings import Endpoints
    from cartridge.tracking import use_tracking
    from kfp_pipelines.runner import run_local, run_local_logged

    if not local:
        raise ValueError("only --local runs here; use `cartridge pipeline submit` for a cluster")
    stack = _connect()
    if not os.environ.get("MLFLOW_TRACKING_URI") or not os.environ.get("AWS_ENDPOINT_URL"):
        raise ValueError(
            "no MLflow/S3 to run against: start the stack (cartridge stack up) "
            "or set MLFLOW_TRACKING_URI and AWS_ENDPOINT_URL"
        )
    bucket = os.environ.get("CARTRIDGE_BUCKET", stack.bucket)
    endpoints = Endpoints(
        mlflow_tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
        s3_endpoint=os.environ["AWS_ENDPOINT_URL"],
        triton_url=os.environ.get("CARTRIDGE_TRITON_URL", ""),
        replay_root=f"s3://{bucket}/replay",
        checkpoint_root=f"s3://{bucket}/checkpoints",
        selfplay_triton=(
            "grpc://" + os.environ.get("CARTRIDGE_TRITON_GRPC_URL", stack.triton_grpc_url)
            if selfplay_triton
            else ""
        ),
    )
    arguments = _pipeline_arguments(
        game, shards, seed, False, endpoints, selfplay=selfplay, training=training, gate=gate
    )
    if verbose:
        run_local(arguments, iterations, stack.home / "kfp")
    else:
        log_path = stack.home / "kfp" / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
        typer.echo(f"kfp.local log: {log_path}")
        progress = PipelineProgress(
            use_tracking(endpoints.mlflow_tracking_uri),
            game.value,
            int(time.time() * 1000),
            training.steps,
        )
        try:
            run_local_logged(arguments, iterations, stack.home / "kfp", log_path, progress.poll)
        except RuntimeError as error:
            raise RuntimeError(f"{error} (see {log_path})") from None
    typer.echo(f"pipeline finished; MLflow: {endpoints.mlflow_tracking_uri}")


@pipeline_app.command("submit")
@_friendly_errors
@with_settings(*RunSettings)
def pipeline_submit(
    host: Annotated[str, typer.Option(help="KFP API endpoint, e.g. http://localhost:8080.")],
    selfplay,
    training,
    gate,
    game: GameOption = GameName.tictactoe,
    iterations: IterationsOption = 3,
    shards: ShardsOption = 8,
    seed: int = 0,
    image: ImageOption = PIPELINE_IMAGE,
    training_image: TrainingImageOption = TRAINING_IMAGE,
    training_gpus: TrainingGpusOption = 1,
    experiment: Annotated[str, typer.Option(help="KFP experiment.")] = "cartridge",
    cron: Annotated[
        str | None,
        typer.Option(
            help="Make it a recurring run: KFP's six-field cron, seconds first "
            "('0 0 */6 * * *': every 6 hours), or @daily, @every 6h."
        ),
    ] = None,
    mlflow_uri: Annotated[str | None, typer.Option(help="MLflow as the pods see it.")] = None,
    s3_endpoint: Annotated[str | None, typer.Option(help="S3 as the pods see it.")] = None,
    triton_url: Annotated[
        str | None, typer.Option(help="Triton HTTP as the pods see it ('' to skip the reload).")
    ] = None,
    selfplay_triton: Annotated[
        str | None,
        typer.Option(
            help="Triton gRPC (grpc://HOST:PORT) for self-play's network calls, e.g. "
            "grpc://triton.cartridge.svc:8001 (default: onnxruntime in each step)."
        ),
    ] = None,
    wait: Annotated[
        int,
        typer.Option(
            min=0,
            help="Wait up to this many seconds for the run to end; exit 1 unless it "
            "succeeded (0: return once it is created).",
        ),
    ] = 0,
):
    """Upload the pipeline as a version of `cartridge-alphazero` and create a run of it,
    or a recurring run with --cron, on a KFP cluster. Endpoints not given are the
    in-cluster services of the manifests in kustomize/. Seeds mix in the KFP run id,
    so recurring runs play new games."""
    from cartridge.settings import Endpoints
    from kfp_pipelines.runner import submit

    given = {
        "mlflow_tracking_uri": mlflow_uri,
        "s3_endpoint": s3_endpoint,
        "triton_url": triton_url,
        "selfplay_triton": selfplay_triton,
    }
    endpoints = Endpoints(**{k: v for k, v in given.items() if v is not None})
    arguments = _pipeline_arguments(
        game, shards, seed, True, endpoints, selfplay=selfplay, training=training, gate=gate
    )
    placed = submit(
        host,
        arguments,
        iterations,
        experiment,
        image=image,
        training_image=training_image,
        training_gpus=training_gpus,
        cron=cron,
        wait_seconds=wait,
    )
    typer.echo(json.dumps(placed))
    if wait and placed.get("state") != "SUCCEEDED":
        err_console.print(f"[red]error:[/red] run {placed['run_id']} ended {placed.get('state')}")
        raise typer.Exit(1)


@bench_app.command("mcts")
@_friendly_errors
def bench_mcts(
    game: GameOption,
    sims: Annotated[int, typer.Option(min=1, help="Simulations per tree.")] = 800,
    trees: Annotated[int, typer.Option(min=1, help="Trees searched together.")] = 64,
    repeats: Annotated[int, typer.Option(min=1)] = 5,
    mcts_solver: SolverFlag = False,
    root_search: RootSearchOption = RootSearch.puct,
    as_json: JsonFlag = False,
):
    """Search simulations per second (uniform evaluator) vs a dict-based Python PUCT."""
    from cartridge.benchmarking.search import baseline_runs
    from cartridge.benchmarking.search import bench_mcts as run
    from cartridge.progress import progress_bar

    total = repeats + baseline_runs(repeats)
    with progress_bar(f"bench mcts {game.value}", total, transient=True) as advance:
        report = run(
            _game(game),
            sims,
            trees=trees,
            repeats=repeats,
            on_run_end=advance,
            solver=mcts_solver,
            root_search=root_search.value,
        )
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
    mcts_solver: SolverFlag = False,
    root_search: RootSearchOption = RootSearch.puct,
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
            solver=mcts_solver,
            root_search=root_search.value,
        )
    _print_result(report, as_json)


@bench_app.command("train")
@_friendly_errors
def bench_train(
    game: GameOption,
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    steps: Annotated[int, typer.Option(min=2)] = 50,
    blocks: Annotated[int | None, typer.Option(help="ResNet blocks.")] = None,
    channels: Annotated[int | None, typer.Option(help="ResNet channels.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    as_json: JsonFlag = False,
):
    """Real trainer samples/s vs a bare training loop of the same network and batch."""
    from cartridge.benchmarking.training import WARMUP_STEPS
    from cartridge.benchmarking.training import bench_train as run
    from cartridge.networks import network_for
    from cartridge.progress import progress_bar

    g = _game(game)
    network = network_for(g.name, blocks, channels)
    with progress_bar(f"bench train {g.name}", steps + WARMUP_STEPS, transient=True) as advance:
        report = run(g, batch_size, steps, network=network, device=device, on_step=advance)
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
