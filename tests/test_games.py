import numpy as np
import pytest

from cartridge.games import GAME_NAMES, load, perft

# Leaf counts of the game trees, finished games not expanded (Othello passes are plies).
KNOWN_PERFT = {
    "tictactoe": [9, 72, 504, 3024, 15120, 54720, 148176, 200448, 127872],
    "connect4": [7, 49, 343, 2401, 16807, 117649, 823536, 5673234],
    "othello": [4, 12, 56, 244, 1396, 8200, 55092, 390216, 3005288],
}

CONNECT4_DRAW = [
    5,
    5,
    5,
    0,
    5,
    4,
    4,
    6,
    6,
    3,
    5,
    1,
    3,
    5,
    2,
    1,
    2,
    3,
    0,
    4,
    1,
    4,
    3,
    0,
    2,
    2,
    2,
    1,
    0,
    0,
    0,
    2,
    1,
    6,
    1,
    3,
    4,
    4,
    3,
    6,
    6,
    6,
]


def play(game_name, moves):
    state = load(game_name).new_initial_state()
    for move in moves:
        state = state.apply(move)
    return state


@pytest.mark.parametrize("name", GAME_NAMES)
def test_perft_matches_known_counts(name):
    start = load(name).new_initial_state()
    counts = [perft(start, depth) for depth in range(1, len(KNOWN_PERFT[name]) + 1)]
    assert counts == KNOWN_PERFT[name]
    assert perft(start, 0) == 1


@pytest.mark.parametrize(
    "moves",
    [
        [0, 3, 1, 4, 2],
        [3, 0, 4, 1, 6, 2],
        [0, 1, 3, 2, 6],
        [1, 0, 4, 2, 7],
        [0, 1, 4, 2, 8],
        [2, 0, 4, 1, 6],
    ],
    ids=["row-x", "row-o", "column-x", "column-x-middle", "diagonal", "anti-diagonal"],
)
def test_tictactoe_lines_win(moves):
    state = play("tictactoe", moves)
    winner = (len(moves) - 1) % 2
    assert state.is_terminal()
    assert state.result(winner) == 1.0
    assert state.result(1 - winner) == -1.0
    assert state.legal_actions() == []


def test_tictactoe_draw():
    state = play("tictactoe", [0, 4, 8, 1, 7, 6, 2, 5, 3])
    assert state.is_terminal() and state.returns() == (0.0, 0.0)
    assert str(state).endswith("draw")


@pytest.mark.parametrize(
    "moves, winner",
    [
        ([0, 0, 1, 1, 2, 2, 3], 0),  # horizontal
        ([6, 0, 6, 0, 6, 0, 5, 0], 1),  # vertical for the second player
        ([0, 1, 1, 2, 2, 3, 2, 3, 3, 6, 3], 0),  # diagonal up-right
        ([6, 5, 5, 4, 4, 3, 4, 3, 3, 0, 3], 0),  # diagonal up-left
    ],
    ids=["horizontal", "vertical", "diagonal", "anti-diagonal"],
)
def test_connect4_fours_win(moves, winner):
    before = play("connect4", moves[:-1])
    assert not before.is_terminal()
    state = before.apply(moves[-1])
    assert state.is_terminal()
    assert state.result(winner) == 1.0


def test_connect4_full_board_is_a_draw():
    state = play("connect4", CONNECT4_DRAW)
    assert state.is_terminal() and state.returns() == (0.0, 0.0)
    assert state.ply == 42


def test_connect4_full_column_is_illegal():
    state = play("connect4", [3, 3, 3, 3, 3, 3])
    assert 3 not in state.legal_actions()
    with pytest.raises(
        ValueError, match=r"illegal action 3 for connect4; legal actions: \[0, 1, 2, 4, 5, 6\]"
    ):
        state.apply(3)


def test_othello_start_and_flips():
    game = load("othello")
    state = game.new_initial_state()
    assert [game.action_to_string(a) for a in state.legal_actions()] == ["d3", "c4", "f5", "e6"]
    after = state.apply(game.string_to_action("d3"))
    x_stones = after.stones(0)
    assert x_stones[2, 3] and x_stones[3, 3]  # d3 placed, d4 flipped
    assert after.stones(0).sum() == 4 and after.stones(1).sum() == 1


def test_othello_flips_several_directions_at_once():
    game = load("othello")
    state = game.parse_board(
        """
        . . . . . . . .
        . X . X . X . .
        . . O O O . . .
        . X O . O X . .
        . . O O O . . .
        . X . X . X . .
        . . . . . . . .
        . . . . . . . .
        X to move
        """
    )
    after = state.apply(game.string_to_action("d4"))
    assert after.stones(1).sum() == 0  # all eight directions flipped
    assert after.is_terminal() and after.result(0) == 1.0


def test_othello_pass_is_forced_and_counts_as_a_ply():
    game = load("othello")
    # O (to move) has no legal move; X still does, so O must pass.
    state = game.parse_board(
        "\n".join(["X X X X X X X X"] * 6 + ["X X X X X X O .", ". . . . . . . ."] + ["O to move"])
    )
    assert not state.is_terminal()
    assert state.legal_actions() == [64]
    with pytest.raises(ValueError, match="legal actions: \\[64\\]"):
        state.apply(0)
    passed = state.apply(game.string_to_action("pass"))
    assert passed.current_player == 0 and passed.ply == state.ply + 1
    assert 64 not in passed.legal_actions()


def test_othello_ends_when_neither_side_can_move():
    game = load("othello")
    state = game.parse_board("\n".join(["X X X X X X X X"] * 8 + ["O to move"]))
    assert state.is_terminal() and state.result(0) == 1.0
    state = game.parse_board(
        "\n".join(["O O O O . . . ."] + [". . . . . . . ."] * 7 + ["X to move"])
    )
    assert state.is_terminal() and state.result(1) == 1.0


@pytest.mark.parametrize("name", GAME_NAMES)
def test_planes_are_from_the_side_to_move(name):
    game = load(name)
    state = game.new_initial_state()
    first = state.legal_actions()[0]
    after = state.apply(first)
    planes = after.planes()
    assert planes.shape == game.planes_shape and planes.dtype == np.float32
    np.testing.assert_array_equal(planes[0], after.stones(1).astype(np.float32))
    np.testing.assert_array_equal(planes[1], after.stones(0).astype(np.float32))


@pytest.mark.parametrize("name", GAME_NAMES)
def test_move_text_round_trips(name):
    game = load(name)
    for action in range(game.num_actions):
        assert game.string_to_action(game.action_to_string(action)) == action


@pytest.mark.parametrize("name", GAME_NAMES)
def test_board_text_round_trips_through_random_games(name):
    game = load(name)
    rng = np.random.default_rng(7)
    for _ in range(20):
        state = game.new_initial_state()
        while not state.is_terminal():
            parsed = game.parse_board(str(state))
            assert parsed == state and parsed.legal_actions() == state.legal_actions()
            state = state.apply(int(rng.choice(state.legal_actions())))
        assert game.parse_board(str(state)).returns() == state.returns()


@pytest.mark.parametrize(
    "name, action, message",
    [
        ("tictactoe", 9, "illegal action 9 for tictactoe; legal actions: \\[0, 1"),
        ("tictactoe", -1, "illegal action -1"),
        ("tictactoe", "a1", "malformed action 'a1'"),
        ("tictactoe", 1.0, "malformed action 1.0"),
        ("tictactoe", True, "malformed action True"),
        ("othello", 64, "illegal action 64 for othello; legal actions: \\[19, 26, 37, 44\\]"),
        ("connect4", None, "malformed action None"),
    ],
)
def test_bad_actions_raise_clear_errors(name, action, message):
    with pytest.raises(ValueError, match=message):
        load(name).new_initial_state().apply(action)


def test_moves_after_the_end_are_refused():
    state = play("tictactoe", [0, 3, 1, 4, 2])
    with pytest.raises(ValueError, match="game is over"):
        state.apply(8)


@pytest.mark.parametrize(
    "name, text",
    [
        ("tictactoe", "j1"),
        ("tictactoe", "a4"),
        ("connect4", "8"),
        ("connect4", "0"),
        ("othello", "i1"),
        ("othello", ""),
    ],
)
def test_malformed_move_text(name, text):
    with pytest.raises(ValueError, match="malformed"):
        load(name).string_to_action(text)


@pytest.mark.parametrize(
    "name, text, message",
    [
        ("tictactoe", "X X\n. . .\n. . .", "expected 3 rows"),
        ("tictactoe", "X X .\nX . .\n. . .", "impossible tictactoe board"),
        ("tictactoe", "X . .\n. . .\n. . .\nX to move", "it is O to move"),
        ("connect4", "\n".join(["X . . . . . ."] + [". . . . . . ."] * 5), "floating"),
        (
            "othello",
            "\n".join(
                [". . . . . . . ."] * 3
                + [". . . O X . . .", ". . . X O . . ."]
                + [". . . . . . . ."] * 3
            ),
            "needs an 'X to move'",
        ),
    ],
)
def test_impossible_boards_are_refused(name, text, message):
    with pytest.raises(ValueError, match=message):
        load(name).parse_board(text)


def test_unknown_game_names_the_choices():
    with pytest.raises(ValueError, match="tictactoe, connect4, othello"):
        load("chess")


def test_states_pickle():
    import pickle

    state = play("othello", [19, 18])
    clone = pickle.loads(pickle.dumps(state))
    assert clone == state and clone.ply == 2 and clone.legal_actions() == state.legal_actions()
