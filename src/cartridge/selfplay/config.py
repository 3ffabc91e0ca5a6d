"""Self-play settings with per-game defaults from AlphaZero practice (`games.describe`)."""

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cartridge.games import Game, describe
from cartridge.mcts import SearchConfig

# Each knob's bounds and meaning, here once: the run settings (`cartridge.settings`)
# use the same types.
GameCount = Annotated[int, Field(ge=1, le=10_000_000, description="Self-play games per shard.")]
SimulationCount = Annotated[
    int, Field(ge=1, le=1_000_000, description="Simulations per searched move.")
]
FullSearchFraction = Annotated[
    float,
    Field(
        gt=0,
        le=1,
        description="Share of moves searched with all `simulations` and recorded for "
        "training (playout cap randomisation); the others get `fast_simulations` and are "
        "played, not recorded.",
    ),
]
RandomOpeningPlies = Annotated[
    int,
    Field(
        ge=0,
        le=64,
        description="Each game starts after k uniformly random moves, k drawn from "
        "0..random_opening_plies; those moves are neither searched nor recorded.",
    ),
]
SearchValueWeight = Annotated[
    float,
    Field(
        ge=0,
        le=1,
        description="Weight of the root search value in a position's value target; the "
        "rest is the game result (0: the result alone, as in AlphaZero).",
    ),
]
TdSteps = Annotated[
    int,
    Field(
        ge=0,
        le=512,
        description="Value targets bootstrap from the root search value this many plies "
        "later (n-step TD, as in MuZero); 0: from the game's result, as in AlphaZero.",
    ),
]


def fast_search_simulations(simulations: int, fast_simulations: int | None) -> int:
    """Simulations of an unrecorded move: as given, else a quarter of the full search."""
    return fast_simulations or max(1, simulations // 4)


def check_fast_search(
    simulations: int, full_search_fraction: float, fast_simulations: int | None
) -> None:
    """A fast search must be cheaper than the full one when some moves get it."""
    fast = fast_search_simulations(simulations, fast_simulations)
    if full_search_fraction < 1 and fast >= simulations:
        raise ValueError(
            f"fast_simulations ({fast}) must be below simulations ({simulations}) when "
            "full_search_fraction is below 1"
        )


class SelfPlayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    games: GameCount
    simulations: SimulationCount
    parallel_games: int = Field(64, ge=1, le=8192, description="Games searched together.")
    temperature_moves: int = Field(ge=0, description="Plies sampled at temperature 1.")
    full_search_fraction: FullSearchFraction = 1.0
    fast_simulations: int | None = Field(
        None, ge=1, description="Simulations of an unrecorded move (default: a quarter)."
    )
    random_opening_plies: RandomOpeningPlies = 0
    search_value_weight: SearchValueWeight = 0.0
    td_steps: TdSteps = 0
    search: SearchConfig

    @model_validator(mode="after")
    def _fast_search_is_cheaper(self) -> "SelfPlayConfig":
        check_fast_search(self.simulations, self.full_search_fraction, self.fast_simulations)
        return self

    @property
    def fast_search_simulations(self) -> int:
        """Playout cap randomisation (KataGo): most moves get a cheap search that only
        picks the move, a random `full_search_fraction` get the full one and become
        policy targets. Games (and value targets) come cheaper; every recorded policy is
        as good as a full search makes it."""
        return fast_search_simulations(self.simulations, self.fast_simulations)

    @classmethod
    def for_game(
        cls,
        game: Game,
        games: int,
        simulations: int,
        value_discount: float = 1.0,
        solver: bool = False,
        root_search: str = "puct",
        **overrides,
    ) -> "SelfPlayConfig":
        defaults = describe(game.name)
        search = overrides.pop("search", None) or SearchConfig(
            dirichlet_alpha=defaults.dirichlet_alpha,
            dirichlet_epsilon=0.25,
            value_discount=value_discount,
            solver=solver,
            root_search=root_search,
        )
        overrides.setdefault("temperature_moves", defaults.temperature_moves)
        return cls(games=games, simulations=simulations, search=search, **overrides)
