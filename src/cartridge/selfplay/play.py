"""Self-play: many games searched together, recorded as one replay shard."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import cartridge
from cartridge.evaluators import Evaluator
from cartridge.games import Game, State
from cartridge.mcts import BatchedMCTS
from cartridge.replay import ReplayShard, ShardMetadata
from cartridge.selfplay.config import SelfPlayConfig


@dataclass
class _GameRecord:
    planes: list[np.ndarray] = field(default_factory=list)
    policy: list[np.ndarray] = field(default_factory=list)
    legal_mask: list[np.ndarray] = field(default_factory=list)
    ply: list[int] = field(default_factory=list)  # of each recorded position
    # Every move played, recorded or not, by ply: (player to move, root search value).
    root_values: dict[int, tuple[int, float]] = field(default_factory=dict)
    # Plies whose root value the solver proved (exact, not an estimate).
    proven: set[int] = field(default_factory=set)


def _value_targets(
    first_player_result: float,
    record: _GameRecord,
    end_ply: int,
    discount: float,
    search_value_weight: float,
    td_steps: int = 0,
) -> list:
    """The value target of each recorded position.

    z is the result for the player to move there, scaled by discount^(plies to the
    end), the same factor the search applies per ply, so the network learns what the
    search backs up (with 1, plain AlphaZero targets). With a `search_value_weight`
    w, the target is (1 - w) z + w q, q the root's mean search value: one game's
    result is a noisy label for every position in it (a blunder late in a won game
    makes its good early positions look lost), while q is what a search from that
    position expects. Averaging the two speeds up learning when games are few.

    With `td_steps` n, z of a position more than n plies from the end is instead the
    search value n plies later, discounted n times (MuZero's n-step return): an
    opening's result hangs on thirty or more later moves, each a chance to throw
    it, while a search a few moves on is right far more often than the game's end.

    A position whose value the search proved (MCTS-solver) takes that exact value:
    nothing the game did afterwards can say more.
    """
    targets = []
    for ply in record.ply:
        mover, q = record.root_values[ply]
        if ply in record.proven:
            targets.append(q)
            continue
        if td_steps and ply + td_steps < end_ply:
            later_mover, later_q = record.root_values[ply + td_steps]
            z = (later_q if later_mover == mover else -later_q) * discount**td_steps
        else:
            z = (first_player_result if mover == 0 else -first_player_result) * discount ** (
                end_ply - ply
            )
        targets.append((1 - search_value_weight) * z + search_value_weight * q)
    return targets


def play_selfplay(
    game: Game,
    evaluator: Evaluator,
    config: SelfPlayConfig,
    *,
    seed: int = 0,
    model: str = "uniform",
    model_sha256: str | None = None,
    on_game_end: Callable[[int], None] | None = None,
) -> ReplayShard:
    """Play `config.games` games and return their positions as a shard (not yet written).

    Up to `parallel_games` games run at once, so every evaluator call carries one
    leaf per running game. Finished slots start the next game until all are
    played. With `full_search_fraction` below 1, every move first gets the fast
    search, then the moves drawn for a full search get the remaining simulations
    (in a second, smaller batch), and only those are recorded. With
    `random_opening_plies`, games start from random positions a few moves deep.
    Everything random comes from `seed`, so a deterministic evaluator gives the same
    shard for the same seed.
    """
    slots = min(config.parallel_games, config.games)
    search = BatchedMCTS(game, slots, config.search, seed=seed)
    capped = config.full_search_fraction < 1
    fast = config.fast_search_simulations
    draws = np.random.default_rng([seed, 1])
    openings = np.random.default_rng([seed, 2])

    def first_state() -> State:
        return _random_opening(game, config.random_opening_plies, openings)

    states: list[State] = []
    records: list[_GameRecord] = []
    for i in range(slots):
        states.append(first_state())
        records.append(_GameRecord())
        search.reset(i, states[i])
    started, finished = slots, 0
    active = np.ones(slots, dtype=bool)
    planes, policy, outcome, legal = [], [], [], []
    results = {1.0: 0, 0.0: 0, -1.0: 0}
    while active.any():
        if capped:
            full = active & (draws.random(slots) < config.full_search_fraction)
            search.run(evaluator, fast, active)
            if full.any():
                search.run(evaluator, config.simulations - fast, full)
        else:
            full = active
            search.run(evaluator, config.simulations, active)
        for i in np.flatnonzero(active):
            state, record = states[i], records[i]
            record.root_values[state.ply] = (state.current_player, search.root_value(i))
            if search.proven_value(i) is not None:
                record.proven.add(state.ply)
            if full[i]:
                record.planes.append(state.planes().astype(np.uint8))
                record.policy.append(search.policy(i))
                record.legal_mask.append(state.legal_mask())
                record.ply.append(state.ply)
            temperature = 1.0 if state.ply < config.temperature_moves else 0.0
            action = search.select_action(i, temperature)
            state = state.apply(action)
            if not state.is_terminal():
                states[i] = state
                search.advance(i, action)
                continue
            first_player_result = state.returns()[0]
            results[first_player_result] += 1
            planes += record.planes
            policy += record.policy
            legal += record.legal_mask
            outcome += _value_targets(
                first_player_result,
                record,
                state.ply,
                config.search.value_discount,
                config.search_value_weight,
                config.td_steps,
            )
            finished += 1
            if on_game_end:
                on_game_end(finished)
            if started < config.games:
                started += 1
                states[i], records[i] = first_state(), _GameRecord()
                search.reset(i, states[i])
            else:
                active[i] = False
    metadata = ShardMetadata(
        game=game.name,
        model=model,
        model_sha256=model_sha256,
        simulations=config.simulations,
        seed=seed,
        games=config.games,
        positions=len(outcome),
        first_player_wins=results[1.0],
        draws=results[0.0],
        second_player_wins=results[-1.0],
        config=config.model_dump(mode="json"),
        package_version=cartridge.__version__,
    )
    # A few short games with a small full-search share may record nothing at all.
    return ReplayShard(
        planes=_stack(planes, (0, *game.planes_shape), np.uint8),
        policy=_stack(policy, (0, game.num_actions), np.float32),
        outcome=np.asarray(outcome, dtype=np.float32),
        legal_mask=_stack(legal, (0, game.num_actions), np.bool_),
        metadata=metadata,
    )


def _random_opening(game: Game, max_plies: int, rng: np.random.Generator) -> State:
    """The start of a game: k uniformly random moves from the initial position, k drawn
    from 0..max_plies (a line that ends the game is drawn again).

    Why: self-play from the initial position alone, sampled for a few moves and then
    greedy, visits a narrow set of openings, so the network knows little about
    positions its own play avoids but an opponent can reach, such as a first move
    on the edge in Connect 4. The random moves are not searched, so they cost
    nothing and are not recorded; everything after them is played and recorded as
    usual.
    """
    while True:
        state = game.new_initial_state()
        for _ in range(int(rng.integers(0, max_plies + 1))):
            state = state.apply(int(rng.choice(state.legal_actions())))
            if state.is_terminal():
                break
        if not state.is_terminal():
            return state


def _stack(rows: list[np.ndarray], empty_shape: tuple, dtype) -> np.ndarray:
    return np.stack(rows).astype(dtype, copy=False) if rows else np.zeros(empty_shape, dtype)
