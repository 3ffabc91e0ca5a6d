"""The settings a run is started with, one typed and frozen object per group.

Each group is validated once, here: the CLI builds it from its options, the pipeline
from its run parameters, and the library steps take it by keyword. A field's alias is
its name as a pipeline parameter (the KFP UI's run form shows one field per parameter),
so the pipeline's signature is derived from these classes and never restated; the
defaults below are the only ones.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from cartridge.selfplay.config import (
    FullSearchFraction,
    GameCount,
    RandomOpeningPlies,
    SearchValueWeight,
    SimulationCount,
    TdSteps,
    check_fast_search,
)

# The reanalysis knobs' bounds and meaning, here once (torch-free, as this module
# must stay): the trainer's own config (`cartridge.training.config`) uses them too.
ReanalyseFraction = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="Share of each training batch whose targets a fresh search with the "
        "network being trained replaces before the step (MuZero Reanalyze; 0: off).",
    ),
]
ReanalyseSimulations = Annotated[
    int, Field(ge=1, le=100_000, description="Simulations of each reanalysis search.")
]


# Fields that tune the statistics rather than the run: not pipeline parameters.
_NOT_A_PARAMETER = {"parameter": False}


class Settings(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, validate_by_alias=True
    )

    @classmethod
    def parameter_fields(cls) -> dict[str, FieldInfo]:
        """Pipeline parameter name -> field, for the fields a run is started with."""
        return {
            field.alias or name: field
            for name, field in cls.model_fields.items()
            if (field.json_schema_extra or {}).get("parameter", True)
        }

    @classmethod
    def parameter_type(cls, parameter: str) -> type:
        """int, float or str: the type a pipeline parameter (or a CLI option) carries."""
        annotation = cls.parameter_fields()[parameter].annotation
        if get_origin(annotation) is Literal:
            return type(get_args(annotation)[0])
        return annotation

    @classmethod
    def choices(cls, parameter: str) -> tuple | None:
        annotation = cls.parameter_fields()[parameter].annotation
        return get_args(annotation) if get_origin(annotation) is Literal else None

    @classmethod
    def from_parameters(cls, values: dict[str, Any]) -> Self:
        """The settings from pipeline parameter values as a step receives them: a run's
        parameters reach a component as text inside a struct, and kfp.local hands ints
        over as floats ('5.0'), so whole numbers are taken back as ints."""
        fields = cls.parameter_fields()
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__} has no parameter {', '.join(unknown)}")
        converted = {
            name: _whole(value) if cls.parameter_type(name) is int else value
            for name, value in values.items()
        }
        return cls.model_validate(converted)

    def parameters(self) -> dict[str, Any]:
        """These settings as pipeline parameter values."""
        names = set(self.parameter_fields())
        return {k: v for k, v in self.model_dump(by_alias=True).items() if k in names}


def _whole(value: Any) -> Any:
    """5, 5.0 and '5.0' as 5; anything else unchanged for the validator to refuse."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if math.isfinite(number) and number.is_integer() else value


class SelfPlaySettings(Settings):
    """How each self-play shard is played. Bounds and meanings are the self-play
    config's own (`cartridge.selfplay.config`); these are the run's choices."""

    games: GameCount = Field(64, alias="games_per_shard")
    simulations: SimulationCount = 100
    value_discount: float = Field(
        1.0,
        ge=0.5,
        le=1.0,
        description="Self-play value per ply (1 = plain AlphaZero); below 1, quicker wins "
        "score higher.",
    )
    full_search_fraction: FullSearchFraction = 1.0
    fast_simulations: int = Field(
        0, ge=0, le=1_000_000, description="Simulations of an unrecorded move (0: a quarter)."
    )
    search_value_weight: SearchValueWeight = 0.0
    td_steps: TdSteps = 0
    random_opening_plies: RandomOpeningPlies = 0
    solver: bool = Field(
        False,
        alias="mcts_solver",
        description="MCTS-solver in self-play: wins, losses and draws the tree proves back "
        "up exactly, become the value targets there, and are played at once.",
    )
    root_search: Literal["puct", "gumbel"] = Field(
        "puct",
        description="Self-play's root: puct (Dirichlet noise, visit counts as policy "
        "targets) or gumbel (Gumbel-top-k and sequential halving, policy targets from "
        "completed Q-values; learns from 16-32 simulations a move).",
    )

    @model_validator(mode="after")
    def _fast_search_is_cheaper(self) -> Self:
        check_fast_search(self.simulations, self.full_search_fraction, self.fast_simulations)
        return self

    def config(self, game, parallel_games: int = 64):
        """The self-play config for `game`, with its own noise and sampling defaults."""
        from cartridge.selfplay import SelfPlayConfig

        return SelfPlayConfig.for_game(
            game,
            self.games,
            self.simulations,
            self.value_discount,
            solver=self.solver,
            root_search=self.root_search,
            parallel_games=parallel_games,
            full_search_fraction=self.full_search_fraction,
            fast_simulations=self.fast_simulations or None,
            search_value_weight=self.search_value_weight,
            td_steps=self.td_steps,
            random_opening_plies=self.random_opening_plies,
        )


class TrainingSettings(Settings):
    """How each iteration trains."""

    steps: int = Field(500, ge=1, le=10_000_000, alias="train_steps")
    batch_size: int = Field(256, ge=1, le=65536)
    window: int = Field(
        4, ge=1, le=1000, alias="replay_window", description="Replay window in iterations."
    )
    train_from: Literal["latest", "champion"] = Field(
        "latest",
        description="latest: continue from the newest trained model, promoted or not "
        "(AlphaGo Zero); champion: start each iteration from the champion's weights.",
    )
    blocks: int = Field(
        0,
        ge=0,
        le=40,
        alias="network_blocks",
        description="ResNet blocks (0: the game's default network).",
    )
    channels: int = Field(
        0, ge=0, le=512, alias="network_channels", description="ResNet channels (0: default)."
    )
    reanalyse_fraction: ReanalyseFraction = 0.0
    reanalyse_simulations: ReanalyseSimulations = 32

    @field_validator("channels")
    @classmethod
    def _enough_channels(cls, channels: int) -> int:
        if 0 < channels < 8:
            raise ValueError("a ResNet needs at least 8 channels (0: the game's default)")
        return channels


class GateSettings(Settings):
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

    games: int = Field(40, ge=2, le=100_000, alias="arena_games", description="Arena games.")
    simulations: SimulationCount = Field(100, alias="arena_simulations")
    method: Literal["lcb", "sprt"] = Field(
        "lcb",
        alias="gate_method",
        description="lcb: the score's lower bound must clear the threshold; sprt: Elo 0 vs 35.",
    )
    threshold: float = Field(
        0.55, gt=0, lt=1, alias="gate_threshold", description="lcb: score lower bound to clear."
    )
    solver_z: float = Field(
        0.0,
        ge=0,
        le=10,
        alias="gate_solver_z",
        description="TicTacToe, Connect 4: also ask the solver. A paired test of both "
        "networks' optimal moves on the gate's positions below -Z keeps a challenger out, "
        "above Z promotes it unless it lost the match (0: off; 1.96 for 95%).",
    )
    round_robin: int = Field(
        0,
        ge=0,
        le=16,
        alias="round_robin_versions",
        description="After the gate, play every not yet played pair among this many "
        "newest versions (arena games and simulations as the gate's), so ratings rest on "
        "more than each version's own gate match (0: off).",
    )
    elo0: float = Field(0.0, json_schema_extra=_NOT_A_PARAMETER)

    @field_validator("round_robin")
    @classmethod
    def _a_pair_at_least(cls, versions: int) -> int:
        if versions == 1:
            raise ValueError("a round robin needs at least 2 versions (0: off)")
        return versions

    elo1: float = Field(35.0, json_schema_extra=_NOT_A_PARAMETER)
    alpha: float = Field(0.05, gt=0, lt=0.5, json_schema_extra=_NOT_A_PARAMETER)
    beta: float = Field(0.05, gt=0, lt=0.5, json_schema_extra=_NOT_A_PARAMETER)
    solver_positions: int = Field(400, ge=1, json_schema_extra=_NOT_A_PARAMETER)


class RetentionSettings(Settings):
    """What storage keeps (`cartridge.retention`): besides these, every version that
    holds an alias or was ever champion, and the checkpoints of running pipeline runs."""

    keep_versions: int = Field(
        10,
        ge=1,
        le=100_000,
        alias="retention_keep_versions",
        description="Newest registry versions kept per game.",
    )
    keep_iterations: int = Field(
        16,
        ge=1,
        le=100_000,
        alias="retention_keep_iterations",
        description="Replay iterations kept per game at least (more when a pipeline run's "
        "replay window asks for more).",
    )
    keep_failed_days: float = Field(
        7.0,
        ge=0,
        le=3650,
        alias="retention_keep_failed_days",
        description="Days the checkpoints of a failed or stopped pipeline run are kept, "
        "for a retry.",
    )
    min_age_minutes: float = Field(
        60.0,
        ge=0,
        le=525_600,
        alias="retention_min_age_minutes",
        description="Nothing younger is deleted: work in progress.",
    )


class Endpoints(Settings):
    """Where a step finds MLflow, S3 and Triton, and where the run keeps its files. Keys
    are not settings: they come from the environment (a Kubernetes Secret in a cluster)."""

    mlflow_tracking_uri: str = "http://mlflow.cartridge.svc:5000"
    s3_endpoint: str = "http://minio.cartridge.svc:9000"
    triton_url: str = Field(
        "http://triton.cartridge.svc:8000",
        description="Triton HTTP, asked to load a new champion ('' to skip the reload).",
    )
    replay_root: str = "s3://cartridge/replay"
    checkpoint_root: str = "s3://cartridge/checkpoints"
    pushgateway_url: str = Field(
        "",
        pattern=r"^(https?://\S+)?$",
        description="Prometheus Pushgateway the steps push their figures to (self-play "
        "positions/s, losses, arena score): http://pushgateway.cartridge.svc:9091 with "
        "kustomize's prometheus component ('' : none).",
    )
    selfplay_triton: str = Field(
        "",
        pattern=r"^(grpc://[^/:\s]+:\d+)?$",
        description="Triton gRPC (grpc://HOST:PORT) that self-play sends its network calls "
        "to, so many self-play pods share one batching GPU server ('' : each step runs the "
        "champion itself with onnxruntime).",
    )


SETTING_GROUPS = {
    "selfplay": SelfPlaySettings,
    "training": TrainingSettings,
    "gate": GateSettings,
    "retention": RetentionSettings,
}


def problems(error: ValidationError, model: type[Settings]) -> list[str]:
    """Each error as 'parameter: message', by the parameter names users type."""
    by_name = {name: field.alias or name for name, field in model.model_fields.items()}
    lines = []
    for item in error.errors():
        where = ".".join(by_name.get(str(part), str(part)) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}" if where else message)
    return lines


def check_run(game_name: str, groups: dict[str, Settings]) -> None:
    """What no single group can check: the game exists and has what the settings ask of
    it. ValueError naming every problem."""
    from cartridge.games import GAME_NAMES
    from cartridge.solvers import require_solver

    if game_name not in GAME_NAMES:
        raise ValueError(f"game: {game_name!r} is not one of {', '.join(GAME_NAMES)}")
    gate = groups.get("gate")
    if gate is not None and gate.solver_z:
        try:
            require_solver(game_name, "the gate's solver check")
        except ValueError as error:
            raise ValueError(f"gate_solver_z: {error}; use 0") from None


__all__ = [
    "Endpoints",
    "GateSettings",
    "RetentionSettings",
    "SETTING_GROUPS",
    "SelfPlaySettings",
    "Settings",
    "TrainingSettings",
    "check_run",
    "problems",
]
