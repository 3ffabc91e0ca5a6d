"""Search hyper-parameters, validated once so bad values fail before any tree is built."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class SearchConfig(BaseModel):
    """PUCT settings shared by self-play, the arena and the web player."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    c_puct: float = Field(1.5, gt=0, description="Exploration weight of the prior term U.")
    fpu_reduction: float = Field(
        0.0, ge=0, le=2, description="Unvisited children start at Q(parent) minus this."
    )
    dirichlet_alpha: float = Field(0.3, gt=0, description="Concentration of the root noise.")
    dirichlet_epsilon: float = Field(
        0.0, ge=0, le=1, description="Share of root priors replaced by noise (0 = no noise)."
    )
    virtual_loss: float = Field(
        1.0, ge=0, le=10, description="Losses charged to a pending path so walks spread out."
    )
    leaves_per_tree: int = Field(
        1, ge=1, le=256, description="Leaves one tree may add to a single evaluator batch."
    )
    value_discount: float = Field(
        1.0,
        gt=0,
        le=1,
        description="Per-ply factor on backed-up values (1 = none); below 1, quicker "
        "wins and slower losses score higher.",
    )
    solver: bool = Field(
        False,
        description="MCTS-solver: exact wins, losses and draws proven in the tree back up "
        "exactly, selection avoids proven losses, a proven root stops searching and plays "
        "a move that keeps its result.",
    )
    root_search: Literal["puct", "gumbel"] = Field(
        "puct",
        description="puct: AlphaZero's root (Dirichlet noise, visit-count policy); gumbel: "
        "Gumbel-top-k sampling and sequential halving at the root, policy from completed "
        "Q-values (Danihelka et al. 2022). Interior nodes use PUCT either way.",
    )
    gumbel_considered: int = Field(
        16, ge=2, le=65, description="Gumbel: actions sequential halving starts from."
    )
    gumbel_scale: float = Field(
        1.0,
        ge=0,
        le=10,
        description="Gumbel: scale of the Gumbel samples (0: deterministic, for play).",
    )
    gumbel_c_visit: float = Field(50.0, gt=0, description="Gumbel: sigma's visit offset.")
    gumbel_c_scale: float = Field(0.1, gt=0, description="Gumbel: sigma's Q-value scale.")
