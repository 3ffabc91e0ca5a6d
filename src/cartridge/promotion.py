"""The gate and promotion: challenger against champion, aliases, and the Triton repository.

Registry conventions for `cartridge-<game>`: alias `challenger` is the newest trained
version, `champion` the one being served, `previous` the champion before it (the
rollback target). Promotion publishes the champion's ONNX file into the Triton model
repository in S3 as version N, N being its registry version, next to the game's
`config.pbtxt` from `triton_models/`, then asks Triton (when CARTRIDGE_TRITON_URL names
one) to load it. Every step checks the current state first, so a promotion that is
retried after a failure finishes the job instead of repeating it.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel, ConfigDict, Field

from cartridge import storage
from cartridge.arena.stats import MatchResult
from cartridge.model_metadata import VALUE_DISCOUNT_KEY, parse_value_discount
from cartridge.tracking import CHALLENGER, fetch_onnx, registered_model_name

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"
TEMPLATES = Path(__file__).resolve().parents[2] / "triton_models"


class GateConfig(BaseModel):
    """When a challenger replaces the champion.

    `lcb`: the lower end of the score's 95% interval must exceed `threshold`.
    `sprt`: a sequential probability ratio test of Elo `elo0` against `elo1` (with error
    rates alpha, beta) must accept `elo1` within the games played.

    `solver_z` (games with an exact solver; 0: off) also asks the solver: challenger
    and champion each pick a move in the gate's own fixed positions, and a paired test
    (McNemar's) on the positions where exactly one of them is optimal gives a z score.
    Below -`solver_z` the challenger is kept out even if it won the match; above
    `solver_z` it is promoted if it did not lose the match (score at least 0.5).
    In between the match decides. A match of a few dozen games often cannot tell two
    close networks apart; the solver can, but only the paired test says when a
    difference in shares is more than the choice of positions (a fixed 2-point margin
    on 200 positions measured as noise: it kept out challengers that were better on
    another position set).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lcb", "sprt"] = "lcb"
    threshold: float = Field(0.55, gt=0, lt=1)
    elo0: float = 0.0
    elo1: float = 35.0
    alpha: float = Field(0.05, gt=0, lt=0.5)
    beta: float = Field(0.05, gt=0, lt=0.5)
    solver_z: float = Field(0.0, ge=0, le=10)
    solver_positions: int = Field(400, ge=1)


class SolverComparison(BaseModel):
    """Solver-optimal moves of challenger and champion on the gate's position set."""

    challenger: float  # share of positions where its move is optimal
    champion: float
    positions: int
    only_challenger: int  # positions where only the challenger's move is optimal
    only_champion: int

    @property
    def z(self) -> float:
        """McNemar's statistic, signed: positive when the challenger is better."""
        discordant = self.only_challenger + self.only_champion
        if discordant == 0:
            return 0.0
        return (self.only_challenger - self.only_champion) / math.sqrt(discordant)


class GateDecision(BaseModel):
    promote: bool
    reason: str
    llr: float | None = None
    solver: SolverComparison | None = None


def _expected_score(elo: float) -> float:
    return 1.0 / (1.0 + 10.0 ** (-elo / 400.0))


def sprt_llr(result: MatchResult, elo0: float, elo1: float) -> float:
    """Log-likelihood ratio of elo1 over elo0 for the match, normal approximation on
    the per-game score (wins, draws and losses as a trinomial)."""
    n = result.games
    score = result.score
    variance = (
        result.wins * (1 - score) ** 2
        + result.draws * (0.5 - score) ** 2
        + result.losses * score**2
    ) / n
    s0, s1 = _expected_score(elo0), _expected_score(elo1)
    if variance == 0.0:  # every game the same result: all the evidence points one way
        return math.inf if score > (s0 + s1) / 2 else -math.inf
    return n * (s1 - s0) * (2 * score - s0 - s1) / (2 * variance)


def decide(
    result: MatchResult, gate: GateConfig, solver: SolverComparison | None = None
) -> GateDecision:
    """The match's verdict, then, with a `solver` comparison and a `solver_z`, the
    solver's say (see GateConfig)."""
    decision = _match_decision(result, gate)
    if solver is None or not gate.solver_z:
        return decision
    shares = (
        f"solver-optimal {solver.challenger:.1%} vs champion {solver.champion:.1%} "
        f"on {solver.positions} gate positions, z {solver.z:+.2f}"
    )
    promote = decision.promote
    if solver.z < -gate.solver_z:
        promote, shares = False, f"{shares}: fewer optimal moves, kept out"
    elif solver.z > gate.solver_z and result.score >= 0.5 and not promote:
        promote, shares = True, f"{shares}: more optimal moves and not behind, promoted"
    return GateDecision(
        promote=promote, reason=f"{decision.reason}; {shares}", llr=decision.llr, solver=solver
    )


def _match_decision(result: MatchResult, gate: GateConfig) -> GateDecision:
    if gate.method == "lcb":
        low = result.ci95[0]
        passed = low > gate.threshold
        return GateDecision(
            promote=passed,
            reason=f"score {result.score:.3f}, 95% lower bound {low:.3f} "
            f"{'>' if passed else '<='} {gate.threshold}",
        )
    llr = sprt_llr(result, gate.elo0, gate.elo1)
    upper = math.log((1 - gate.beta) / gate.alpha)
    lower = math.log(gate.beta / (1 - gate.alpha))
    if llr >= upper:
        verdict, passed = f"accepts Elo +{gate.elo1:g}", True
    elif llr <= lower:
        verdict, passed = f"rejects (Elo {gate.elo0:g} more likely)", False
    else:
        verdict, passed = "is inconclusive after these games", False
    return GateDecision(
        promote=passed,
        llr=llr,
        reason=f"SPRT LLR {llr:.2f} in [{lower:.2f}, {upper:.2f}] {verdict}",
    )


def triton_repository() -> str:
    """Where Triton's model repository lives: CARTRIDGE_TRITON_REPOSITORY, else the bucket's
    `triton/` prefix."""
    bucket = os.environ.get("CARTRIDGE_BUCKET", "cartridge")
    return os.environ.get("CARTRIDGE_TRITON_REPOSITORY", f"s3://{bucket}/triton")


def _alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    try:
        return client.get_model_version_by_alias(name, alias).version
    except MlflowException:
        return None


class PromotionResult(BaseModel):
    game: str
    champion: str | None
    previous: str | None
    changed: bool
    triton_model: str | None = None
    triton_error: str | None = None


def triton_templates() -> tuple[Path, list[Path]]:
    """The config folder for the Triton that reads the repository, and any files each
    version needs beside `model.onnx`.

    CARTRIDGE_TRITON_BACKEND=onnxruntime (the default: the cluster's official image)
    uses `triton_models/cartridge_<game>/`; `python` (the local stack's server, which has
    only the python backend) uses `triton_models/local/` and its `model.py`."""
    root = Path(os.environ.get("CARTRIDGE_TRITON_TEMPLATES", TEMPLATES))
    backend = os.environ.get("CARTRIDGE_TRITON_BACKEND", "onnxruntime")
    if backend == "onnxruntime":
        return root, []
    if backend == "python":
        return root / "local", [root / "local" / "model.py"]
    raise ValueError(f"CARTRIDGE_TRITON_BACKEND must be 'onnxruntime' or 'python', got {backend!r}")


def publish_to_triton(
    client: MlflowClient, game_name: str, version: str, repository: str | None = None
) -> str:
    """Copy version `version`'s ONNX file and the game's config into the Triton repository;
    returns the model's folder. Re-publishing the same version rewrites the same objects."""
    repository = repository or triton_repository()
    folder = storage.join(repository, f"cartridge_{game_name}")
    templates, version_files = triton_templates()
    config = templates / f"cartridge_{game_name}" / "config.pbtxt"
    for required in (config, *version_files):
        if not required.is_file():
            raise FileNotFoundError(f"no Triton template at {required}")
    name = registered_model_name(game_name)
    with tempfile.TemporaryDirectory(prefix="cartridge-publish-") as workdir:
        onnx_file, value_discount = _single_file(
            fetch_onnx(f"models:/{name}/{version}", Path(workdir))
        )
        served_config = Path(workdir) / "config.pbtxt"
        served_config.write_text(config.read_text() + _parameters(value_discount))
        # The config goes last: a Triton polling the repository sees a complete version.
        _put(onnx_file, storage.join(folder, str(version), "model.onnx"))
        for extra in version_files:
            _put(extra, storage.join(folder, str(version), extra.name))
        _put(served_config, storage.join(folder, "config.pbtxt"))
    return folder


def _parameters(value_discount: float) -> str:
    """The served version's search setting, for clients that search with the model.
    Triton serves only the newest version, so the model-level config can describe it."""
    return (
        "\n# Written at publication: the served version's value discount (its values are\n"
        "# discounted results, so searches must back them up with the same factor).\n"
        f'parameters: {{ key: "{VALUE_DISCOUNT_KEY}" '
        f'value: {{ string_value: "{value_discount!r}" }} }}\n'
    )


def _single_file(onnx_file: Path) -> tuple[Path, float]:
    """The model with its weights inline, and its value discount. MLflow stores ONNX
    weights as external data beside the graph, but Triton loads `model.onnx` alone from
    its version folder."""
    import onnx

    model = onnx.load(str(onnx_file))  # pulls the external data in
    single = onnx_file.with_name("model-single.onnx")
    onnx.save_model(model, str(single), save_as_external_data=False)
    metadata = {entry.key: entry.value for entry in model.metadata_props}
    return single, parse_value_discount(metadata.get(VALUE_DISCOUNT_KEY), f"{onnx_file} metadata")


def _put(local: Path, destination: str) -> None:
    if storage.is_s3(destination):
        storage.upload_file(local, destination)
    else:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        Path(destination).write_bytes(local.read_bytes())


def promote(
    client: MlflowClient,
    game_name: str,
    version: str | None = None,
    match: MatchResult | None = None,
    decision: GateDecision | None = None,
    repository: str | None = None,
) -> PromotionResult:
    """Make `version` (default: the challenger) the champion and publish it to Triton."""
    name = registered_model_name(game_name)
    version = str(version or _alias_version(client, name, CHALLENGER) or "")
    if not version:
        raise ValueError(f"{name} has no version with alias {CHALLENGER!r} to promote")
    client.get_model_version(name, version)  # fails clearly for a version that does not exist
    current = _alias_version(client, name, CHAMPION)
    changed = current != version
    if changed:
        if current is not None:
            client.set_registered_model_alias(name, PREVIOUS, current)
        client.set_registered_model_alias(name, CHAMPION, version)
    if changed:
        client.set_model_version_tag(
            name, version, "promoted_at", datetime.now(UTC).isoformat(timespec="seconds")
        )
    record_arena(client, game_name, version, match, decision)
    folder = publish_to_triton(client, game_name, version, repository)
    return PromotionResult(
        game=game_name,
        champion=version,
        previous=_alias_version(client, name, PREVIOUS),
        changed=changed,
        triton_model=folder,
        triton_error=_tell_triton(game_name),
    )


def _tell_triton(game_name: str) -> str | None:
    """Load the new version in Triton; a server that is down is reported, not fatal."""
    from cartridge.serving.triton import notify_triton

    error = notify_triton(game_name)
    if error:
        log.warning("promotion is done but Triton did not reload: %s", error)
    return error


def record_arena(
    client: MlflowClient,
    game_name: str,
    version: str,
    match: MatchResult | None,
    decision: GateDecision | None,
) -> None:
    """Write an arena result and the gate's verdict as tags on a model version."""
    tags = {}
    if match is not None:
        tags.update(
            {
                "arena_opponent": match.player2,
                "arena_games": str(match.games),
                "arena_wins": str(match.wins),
                "arena_draws": str(match.draws),
                "arena_losses": str(match.losses),
                "arena_score": f"{match.score:.4f}",
                "arena_ci95": f"{match.ci95[0]:.4f},{match.ci95[1]:.4f}",
                "arena_elo": f"{match.elo_diff:.1f}",
            }
        )
        if match.solver_optimal_fraction is not None:
            tags["solver_optimal_fraction"] = f"{match.solver_optimal_fraction:.4f}"
            tags["solver_result_fraction"] = f"{match.solver_result_fraction:.4f}"
    if decision is not None:
        tags["gate"] = decision.reason
        if decision.solver is not None:
            tags["gate_solver_optimal_fraction"] = f"{decision.solver.challenger:.4f}"
            tags["gate_champion_solver_optimal_fraction"] = f"{decision.solver.champion:.4f}"
            tags["gate_solver_z"] = f"{decision.solver.z:.2f}"
    name = registered_model_name(game_name)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)


def rollback(
    client: MlflowClient, game_name: str, repository: str | None = None
) -> PromotionResult:
    """Restore `previous` as champion and withdraw the demoted version from Triton, so the
    repository's newest version is the restored champion again."""
    name = registered_model_name(game_name)
    previous = _alias_version(client, name, PREVIOUS)
    if previous is None:
        raise ValueError(f"{name} has no {PREVIOUS!r} version to roll back to")
    demoted = _alias_version(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.delete_registered_model_alias(name, PREVIOUS)
    folder = storage.join(repository or triton_repository(), f"cartridge_{game_name}")
    if demoted is not None and demoted != previous:
        client.set_model_version_tag(
            name, demoted, "rolled_back_at", datetime.now(UTC).isoformat(timespec="seconds")
        )
        storage.delete_prefix(storage.join(folder, str(demoted)))
    publish_to_triton(client, game_name, previous, repository)
    return PromotionResult(
        game=game_name,
        champion=previous,
        previous=None,
        changed=True,
        triton_model=folder,
        triton_error=_tell_triton(game_name),
    )


def evaluate_challenger(
    client: MlflowClient,
    game_name: str,
    gate: GateConfig,
    games: int,
    simulations: int,
    seed: int = 0,
    solver_positions: int = 200,
) -> tuple[MatchResult | None, GateDecision, str]:
    """Play the challenger against the champion (against `random` while there is none)
    and apply the gate. Versions are pinned by number, so an alias moving mid-match
    cannot change who plays. Returns (match, decision, challenger version); no match
    when the challenger already is the champion (a retried pipeline step)."""
    from cartridge.arena import make_player, play_match
    from cartridge.games import load
    from cartridge.solvers import require_solver

    if gate.solver_z:
        require_solver(game_name, "the gate's solver check")
    game = load(game_name)
    name = registered_model_name(game_name)
    challenger = _alias_version(client, name, CHALLENGER)
    if challenger is None:
        raise ValueError(f"{name} has no version with alias {CHALLENGER!r} to evaluate")
    champion = _alias_version(client, name, CHAMPION)
    if champion == challenger:
        return (
            None,
            GateDecision(promote=False, reason="the challenger is already champion"),
            challenger,
        )
    player1 = make_player(f"models:/{name}/{challenger}", game, simulations, seed=seed)
    opponent = f"models:/{name}/{champion}" if champion else "random"
    player2 = make_player(opponent, game, simulations, seed=seed + 1)
    match = play_match(game, player1, player2, games, seed=seed)
    if game_name == "connect4" and solver_positions:
        from cartridge.arena.accuracy import add_solver_accuracy

        add_solver_accuracy(match, player1, game, solver_positions)
    solver = None
    if gate.solver_z and champion:
        solver = _compare_on_gate_positions(game, player1, player2, gate.solver_positions)
    return match, decide(match, gate, solver), challenger


def _compare_on_gate_positions(game, challenger, champion, count: int) -> SolverComparison:
    """Both match players' networks on the gate's positions, reseeded alike: a search
    player breaks ties with its random stream, so players that have just played a
    match would not answer alike."""
    from cartridge.arena.accuracy import GATE_POSITIONS_SEED, optimal_moves, solver_positions

    positions = solver_positions(game, count, GATE_POSITIONS_SEED)
    new, old = (optimal_moves(player.reseeded(0), positions) for player in (challenger, champion))
    return SolverComparison(
        challenger=float(new.mean()),
        champion=float(old.mean()),
        positions=len(positions),
        only_challenger=int((new & ~old).sum()),
        only_champion=int((old & ~new).sum()),
    )
