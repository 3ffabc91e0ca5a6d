import numpy as np
import pytest

from cartridge.evaluators import RolloutEvaluator, UniformEvaluator
from cartridge.games import load
from cartridge.mcts import BatchedMCTS, SearchConfig
from cartridge.solvers import optimal_actions


def search_once(state, simulations, config=None, evaluator=None, seed=0):
    search = BatchedMCTS(state.game, 1, config, seed=seed)
    search.reset(0, state)
    search.run(evaluator or UniformEvaluator(state.game), simulations)
    return search


def connect4(text):
    return load("connect4").parse_board(text)


# X (to move) has three in a row on the bottom: column 4 (index 3) wins at once.
WIN_IN_ONE = """
. . . . . . .
. . . . . . .
. . . . . . .
. . . . . . .
O O O . . . .
X X X . . . .
X to move
"""

# O threatens to complete the bottom row at column 4 (index 3); X must block there.
BLOCK_OR_LOSE = """
. . . . . . .
. . . . . . .
. . . . . . .
. . . . . . .
X . . . . . .
O O O . X X .
X to move
"""


@pytest.mark.parametrize("leaves_per_tree", [1, 8])
def test_finds_a_one_move_win_in_connect4(leaves_per_tree):
    config = SearchConfig(leaves_per_tree=leaves_per_tree)
    search = search_once(connect4(WIN_IN_ONE), 400, config)
    assert int(np.argmax(search.visit_counts(0))) == 3
    assert search.root_value(0) > 0.5


@pytest.mark.parametrize("leaves_per_tree", [1, 8])
def test_blocks_a_one_move_loss_in_connect4(leaves_per_tree):
    config = SearchConfig(leaves_per_tree=leaves_per_tree)
    search = search_once(connect4(BLOCK_OR_LOSE), 800, config)
    assert int(np.argmax(search.visit_counts(0))) == 3


def _never_loses(bot_seat, simulations=2000):
    """Every game of the search (argmax, uniform evaluator) against every line of
    perfect play, from every opening when the bot moves second."""
    game = load("tictactoe")
    results = []

    def bot_move(state):
        return int(np.argmax(search_once(state, simulations).visit_counts(0)))

    def play(state):
        if state.is_terminal():
            results.append(state.result(bot_seat))
        elif state.current_player == bot_seat:
            play(state.apply(bot_move(state)))
        else:
            opponent_moves = optimal_actions(state) if state.ply else state.legal_actions()
            for action in opponent_moves:
                play(state.apply(action))

    play(game.new_initial_state())
    return results


@pytest.mark.parametrize("bot_seat", [0, 1], ids=["bot-first", "bot-second"])
def test_uniform_search_never_loses_tictactoe_to_perfect_play(bot_seat):
    results = _never_loses(bot_seat)
    assert len(results) >= (9 if bot_seat == 1 else 1)
    assert min(results) == 0.0  # only draws: perfect play cannot be beaten


def test_simulation_counts_are_exact():
    state = load("connect4").new_initial_state()
    search = search_once(state, 300)
    # The first simulation evaluates the root itself; every other one walks an edge.
    assert search.visit_counts(0).sum() == 299
    search.run(UniformEvaluator(state.game), 100)
    assert search.visit_counts(0).sum() == 399


def test_subtree_reuse_keeps_the_child_statistics():
    state = load("connect4").new_initial_state()
    search = search_once(state, 2000)
    counts = search.visit_counts(0)
    action = int(np.argmax(counts))
    size_before = search.tree_size(0)
    search.advance(0, action)
    assert search.root_state(0) == state.apply(action)
    assert search.visit_counts(0).sum() == counts[action] - 1
    assert 1 < search.tree_size(0) < size_before
    search.run(UniformEvaluator(state.game), 100)
    assert search.visit_counts(0).sum() == counts[action] - 1 + 100


def test_advance_through_an_unvisited_action_starts_fresh_and_validates():
    game = load("tictactoe")
    search = search_once(game.new_initial_state(), 2)  # root plus one child
    unvisited = [a for a, n in enumerate(search.visit_counts(0)) if n == 0][0]
    search.advance(0, unvisited)
    assert search.tree_size(0) == 1
    with pytest.raises(ValueError, match="illegal action"):
        search.advance(0, unvisited)  # that cell is taken now


def test_trees_in_a_batch_search_as_if_alone():
    game = load("othello")
    rng = np.random.default_rng(3)
    states = []
    for _ in range(5):
        state = game.new_initial_state()
        for _ in range(int(rng.integers(0, 10))):
            state = state.apply(int(rng.choice(state.legal_actions())))
        states.append(state)
    evaluator = RolloutEvaluator(game, seed=0)
    batched = BatchedMCTS(game, len(states))
    for i, state in enumerate(states):
        batched.reset(i, state)
    batched.run(evaluator, 200)
    # A deterministic evaluator makes each tree's search independent of its neighbours.
    uniform = UniformEvaluator(game)
    batched_uniform = BatchedMCTS(game, len(states))
    for i, state in enumerate(states):
        batched_uniform.reset(i, state)
    batched_uniform.run(uniform, 200)
    for i, state in enumerate(states):
        alone = search_once(state, 200)
        np.testing.assert_array_equal(batched_uniform.visit_counts(i), alone.visit_counts(0))
        assert batched.visit_counts(i).sum() == 199


def test_only_active_trees_search():
    game = load("tictactoe")
    search = BatchedMCTS(game, 3)
    for i in range(3):
        search.reset(i, game.new_initial_state())
    search.run(UniformEvaluator(game), 50, active=np.array([True, False, True]))
    assert [search.visit_counts(i).sum() for i in range(3)] == [49, 0, 49]


def test_dirichlet_noise_is_seeded_and_keeps_priors_normalised():
    state = load("connect4").new_initial_state()
    config = SearchConfig(dirichlet_alpha=0.3, dirichlet_epsilon=0.25)
    a = search_once(state, 50, config, seed=1).priors(0)
    b = search_once(state, 50, config, seed=1).priors(0)
    c = search_once(state, 50, config, seed=2).priors(0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.sum() == pytest.approx(1.0, abs=1e-5)
    assert a.min() >= 0.75 / 7 - 1e-6  # the prior share that noise cannot touch
    plain = search_once(state, 50).priors(0)
    np.testing.assert_allclose(plain, np.full(7, 1 / 7), atol=1e-6)


def test_temperature_policy():
    search = search_once(connect4(WIN_IN_ONE), 300)
    counts = search.visit_counts(0).astype(np.float64)
    np.testing.assert_allclose(search.policy(0, 1.0), counts / counts.sum(), rtol=1e-5)
    greedy = search.policy(0, 0.0)
    assert greedy[3] == 1.0 and greedy.sum() == 1.0
    sharp = search.policy(0, 0.5)
    np.testing.assert_allclose(sharp, counts**2 / (counts**2).sum(), rtol=1e-4)
    assert search.select_action(0, 0.0) == 3
    with pytest.raises(ValueError, match="temperature"):
        search.policy(0, -1.0)


def test_sampled_actions_follow_the_policy():
    search = search_once(load("tictactoe").new_initial_state(), 500)
    pi = search.policy(0, 1.0)
    draws = np.bincount([search.select_action(0, 1.0) for _ in range(4000)], minlength=9)
    np.testing.assert_allclose(draws / 4000, pi, atol=0.03)


def test_exact_values_at_finished_games():
    # X to move wins at once; a terminal child's value is exact, so Q -> +1.
    search = search_once(connect4(WIN_IN_ONE), 2000)
    counts = search.visit_counts(0)
    assert counts[3] > 0.8 * counts.sum()


@pytest.mark.parametrize("discount", [0.9, 0.8])
def test_value_discount_scales_a_win_by_its_distance(discount):
    # The win is one ply away, so its backed-up value is discount^1 instead of 1, and
    # the root's mean value shrinks by the same factor; the move chosen does not change.
    plain = search_once(connect4(WIN_IN_ONE), 2000)
    discounted = search_once(connect4(WIN_IN_ONE), 2000, SearchConfig(value_discount=discount))
    assert int(np.argmax(discounted.visit_counts(0))) == 3
    assert discounted.root_value(0) == pytest.approx(discount * plain.root_value(0), abs=0.02)
    with pytest.raises(ValueError, match="value_discount"):
        SearchConfig(value_discount=1.5)


class BadEvaluator:
    def __init__(self, game, kind):
        self.game, self.kind = game, kind

    def evaluate(self, planes):
        batch = len(planes)
        if self.kind == "shape":
            return np.zeros((batch, 3), np.float32), np.zeros(batch, np.float32)
        return np.zeros((batch, self.game.num_actions), np.float32), np.full(batch, np.nan)


@pytest.mark.parametrize("kind, message", [("shape", "expected"), ("nan", "non-finite")])
def test_bad_evaluator_output_is_refused(kind, message):
    game = load("connect4")
    search = BatchedMCTS(game, 2)
    search.reset(0, game.new_initial_state())
    search.reset(1, game.new_initial_state())
    with pytest.raises(ValueError, match=message):
        search.run(BadEvaluator(game, kind), 10)


def test_misuse_is_refused():
    game = load("tictactoe")
    with pytest.raises(ValueError, match="num_trees"):
        BatchedMCTS(game, 0)
    search = BatchedMCTS(game, 1)
    with pytest.raises(ValueError, match="reset"):
        search.run(UniformEvaluator(game), 10)
    with pytest.raises(ValueError, match="cannot root"):
        search.reset(0, load("connect4").new_initial_state())
    finished = game.new_initial_state()
    for move in [0, 3, 1, 4, 2]:
        finished = finished.apply(move)
    search.reset(0, finished)
    with pytest.raises(ValueError, match="finished game"):
        search.run(UniformEvaluator(game), 10)
    with pytest.raises(IndexError):
        search.visit_counts(5)
    with pytest.raises(ValueError):
        SearchConfig(c_puct=-1)
    with pytest.raises(ValueError):
        SearchConfig(unknown=1)
