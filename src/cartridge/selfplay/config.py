"""Self-play settings with per-game defaults from AlphaZero practice."""

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cartridge.games import Game
from cartridge.mcts import SearchConfig

# Dirichlet alpha roughly 10 / typical number of legal moves, capped at 1;
# sampling (temperature 1) covers the opening, where diversity pays.
_GAME_DEFAULTS = {
    "tictactoe": {"dirichlet_alpha": 1.0, "temperature_moves": 4},
    "connect4": {"dirichlet_alpha": 1.0, "temperature_moves": 10},
    "othello": {"dirichlet_alpha": 0.5, "temperature_moves": 20},
}


class SelfPlayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    games: int = Field(ge=1, le=10_000_000)
    simulations: int = Field(ge=1, le=1_000_000)
    parallel_games: int = Field(64, ge=1, le=8192, description="Games searched together.")
    temperature_moves: int = Field(ge=0, description="Plies sampled at temperature 1.")
    full_search_fraction: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Share of moves searched with all `simulations` and recorded for "
        "training; the others get `fast_simulations` and are played, not recorded.",
    )
    fast_simulations: int | None = Field(
        None, ge=1, description="Simulations of an unrecorded move (default: a quarter)."
    )
    random_opening_plies: int = Field(
        0,
        ge=0,
        le=64,
        description="Each game starts after k uniformly random moves, k drawn from "
        "0..random_opening_plies; those moves are neither searched nor recorded.",
    )
    search_value_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Weight of the root search value in a position's value target; the "
        "rest is the game result (0: the result alone, as in AlphaZero).",
    )
    td_steps: int = Field(
        0,
        ge=0,
        le=512,
        description="Value targets bootstrap from the root search value this many plies "
        "later (n-step TD, as in MuZero); 0: from the game's result, as in AlphaZero.",
    )
    search: SearchConfig

    @model_validator(mode="after")
    def _fast_search_is_cheaper(self) -> "SelfPlayConfig":
        if self.full_search_fraction < 1 and self.fast_search_simulations >= self.simulations:
            raise ValueError(
                f"fast_simulations ({self.fast_search_simulations}) must be below "
                f"simulations ({self.simulations}) when full_search_fraction is below 1"
            )
        return self

    @property
    def fast_search_simulations(self) -> int:
        """Playout cap randomisation (KataGo): most moves get a cheap search that only
        picks the move, a random `full_search_fraction` get the full one and become
        policy targets. Games (and value targets) come cheaper; every recorded policy is
        as good as a full search makes it."""
        return self.fast_simulations or max(1, self.simulations // 4)

    @classmethod
    def for_game(
        cls, game: Game, games: int, simulations: int, value_discount: float = 1.0, **overrides
    ) -> "SelfPlayConfig":
        defaults = _GAME_DEFAULTS[game.name]
        search = overrides.pop("search", None) or SearchConfig(
            dirichlet_alpha=defaults["dirichlet_alpha"],
            dirichlet_epsilon=0.25,
            value_discount=value_discount,
        )
        overrides.setdefault("temperature_moves", defaults["temperature_moves"])
        return cls(games=games, simulations=simulations, search=search, **overrides)
