import numpy as np
import pytest

from cartridge.games import GAME_NAMES, load
from cartridge.games.symmetry import action_map, inverse


def random_line(game, rng, plies):
    state, moves = game.new_initial_state(), []
    for _ in range(plies):
        if state.is_terminal():
            break
        moves.append(int(rng.choice(state.legal_actions())))
        state = state.apply(moves[-1])
    return state, moves


@pytest.mark.parametrize("name", GAME_NAMES)
def test_symmetry_counts(name):
    assert load(name).num_symmetries == {"tictactoe": 8, "connect4": 2, "othello": 8}[name]


@pytest.mark.parametrize("name", GAME_NAMES)
def test_round_trip_restores_planes_and_policy(name):
    game = load(name)
    rng = np.random.default_rng(0)
    planes = rng.random((5, *game.planes_shape)).astype(np.float32)
    policy = rng.random((5, game.num_actions)).astype(np.float32)
    seen = set()
    for k in range(game.num_symmetries):
        moved_planes, moved_policy = game.apply_symmetry(k, planes, policy)
        seen.add(moved_planes.tobytes())
        back_planes, back_policy = game.apply_symmetry(inverse(game, k), moved_planes, moved_policy)
        np.testing.assert_array_equal(back_planes, planes)
        np.testing.assert_array_equal(back_policy, policy)
    assert len(seen) == game.num_symmetries  # all distinct on a random input


def state_from_planes(game, planes, player):
    """The position whose side to move (`player`) owns planes[0]."""
    marks = ("X", "O") if player == 0 else ("O", "X")
    rows = [
        " ".join(
            marks[0] if planes[0, r, c] else marks[1] if planes[1, r, c] else "."
            for c in range(game.width)
        )
        for r in range(game.height)
    ]
    return game.parse_board("\n".join(rows + [f"{'XO'[player]} to move"]))


@pytest.mark.parametrize("name", GAME_NAMES)
def test_symmetries_commute_with_the_rules(name):
    """For a transformed position, the legal moves are the transformed legal moves,
    and playing a mapped move reaches the transformed successor."""
    game = load(name)
    rng = np.random.default_rng(1)
    for k in range(game.num_symmetries):
        sigma = action_map(game, k)
        for _ in range(6):
            state, _ = random_line(game, rng, int(rng.integers(0, 14)))
            if state.is_terminal():
                continue
            mask = state.legal_mask().astype(np.float32)
            moved_planes, moved_mask = game.apply_symmetry(k, state.planes(), mask)
            moved = state_from_planes(game, moved_planes, state.current_player)
            np.testing.assert_array_equal(moved.legal_mask(), moved_mask.astype(bool))
            for action in state.legal_actions():
                after, _ = game.apply_symmetry(k, state.apply(action).planes(), mask)
                np.testing.assert_array_equal(moved.apply(int(sigma[action])).planes(), after)


def test_othello_pass_is_fixed_by_every_symmetry():
    game = load("othello")
    for k in range(8):
        assert action_map(game, k)[64] == 64


def test_bad_symmetry_arguments():
    game = load("connect4")
    with pytest.raises(ValueError, match="symmetries 0..1"):
        game.apply_symmetry(2, np.zeros((2, 6, 7)), np.zeros(7))
    with pytest.raises(ValueError, match="do not end in"):
        game.apply_symmetry(1, np.zeros((2, 7, 6)), np.zeros(7))
    with pytest.raises(ValueError, match="does not end in 7"):
        game.apply_symmetry(1, np.zeros((2, 6, 7)), np.zeros(9))
