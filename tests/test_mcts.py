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


# --- MCTS-solver ---------------------------------------------------------------------

# O has three in a row with both ends open: whatever X plays, O wins next move.
DOUBLE_THREAT = """
. . . . . . .
. . . . . . .
. . . . . . .
O . . . . . .
X . . . . . X
X . O O O . X
X to move
"""

SOLVER = SearchConfig(solver=True)


def negamax(state, discount):
    """The game-theoretic value for the player to move, discounted per ply as the
    search discounts, by brute force over the public game API."""
    best = -2.0
    for action in state.legal_actions():
        child = state.apply(action)
        value = (
            child.returns()[child.current_player]
            if child.is_terminal()
            else (negamax(child, discount))
        )
        best = max(best, -discount * value)
    return best


def endgame(game_name, plies_left, seed):
    """A position reached by random play with about `plies_left` plies to go."""
    game, rng = load(game_name), np.random.default_rng(seed)
    total = {"tictactoe": 9, "connect4": 42, "othello": 60}[game_name]
    while True:
        state = game.new_initial_state()
        while not state.is_terminal() and state.ply < total - plies_left:
            state = state.apply(int(rng.choice(state.legal_actions())))
        if not state.is_terminal():
            return state


@pytest.mark.parametrize(
    "game_name, plies_left", [("tictactoe", 6), ("connect4", 9), ("othello", 7)]
)
@pytest.mark.parametrize("seed", range(4))
def test_solver_proves_endgames_exactly(game_name, plies_left, seed):
    state = endgame(game_name, plies_left, seed)
    search = search_once(state, 100_000, SOLVER)
    truth = negamax(state, 1.0)
    assert search.proven_value(0) == truth
    assert search.root_value(0) == truth
    # A proven root stops the search long before the budget.
    assert search.visit_counts(0).sum() < 20_000
    # The move played keeps the proven result.
    action = search.select_action(0, 1.0)
    child = state.apply(action)
    after = child.returns()[child.current_player] if child.is_terminal() else negamax(child, 1.0)
    assert -after == truth


@pytest.mark.parametrize("seed", range(3))
def test_solver_values_carry_the_discount(seed):
    state = endgame("connect4", 7, seed)
    search = search_once(state, 100_000, SearchConfig(solver=True, value_discount=0.9))
    truth = negamax(state, 0.9)
    # A win is proven by the first winning line found (a quicker one may exist),
    # a draw or loss only when every reply is settled.
    assert np.sign(search.proven_value(0)) == np.sign(truth)
    assert abs(search.proven_value(0)) <= abs(truth) + 1e-6 or truth <= 0


def test_solver_proves_a_forced_win_and_plays_it_at_once():
    search = search_once(connect4(WIN_IN_ONE), 800, SOLVER)
    assert search.proven_value(0) == 1.0
    # Proven by the winning child, so the rest of the budget is left unspent.
    assert search.visit_counts(0).sum() < 50
    assert {search.select_action(0, 1.0) for _ in range(50)} == {3}
    np.testing.assert_array_equal(search.policy(0, 1.0), np.eye(7, dtype=np.float32)[3])
    # The search stays proven on a further call, without simulating.
    assert search.run(UniformEvaluator(load("connect4")), 100) == 0


def test_solver_proves_a_forced_loss():
    search = search_once(connect4(DOUBLE_THREAT), 20_000, SOLVER)
    assert search.proven_value(0) == -1.0
    # Every move loses: the policy shares the mass among them.
    np.testing.assert_allclose(search.policy(0), np.full(7, 1 / 7), rtol=1e-6)
    discounted = search_once(
        connect4(DOUBLE_THREAT), 20_000, SearchConfig(solver=True, value_discount=0.9)
    )
    assert discounted.proven_value(0) == pytest.approx(-0.81)


@pytest.mark.parametrize(
    "board",
    [
        "X O .\n. X .\n. . O\nX to move",  # X forks with 6: threats on 2 and 3
        "X O .\n. . .\n. . .\nX to move",  # O answered the corner on an edge: lost
    ],
)
def test_tictactoe_forks_are_proven_wins(board):
    state = load("tictactoe").parse_board(board)
    search = search_once(state, 20_000, SOLVER)
    assert search.proven_value(0) == 1.0
    assert negamax(state.apply(search.select_action(0, 0.0)), 1.0) == -1.0


def test_solver_stops_entering_moves_proven_to_lose():
    plain = search_once(connect4(BLOCK_OR_LOSE), 800).visit_counts(0)
    search = search_once(connect4(BLOCK_OR_LOSE), 800, SOLVER)
    solving = search.visit_counts(0)
    losing = [a for a in range(7) if a != 3]
    # Each losing move is entered until the opponent's win below it is found, then never.
    assert solving[losing].max() < plain[losing].min()
    assert solving[3] > plain[3]
    search.run(UniformEvaluator(load("connect4")), 4000)
    np.testing.assert_array_equal(search.visit_counts(0)[losing], solving[losing])


def test_solver_off_leaves_only_finished_games_exact():
    search = search_once(connect4(DOUBLE_THREAT), 2000)
    assert search.proven_value(0) is None
    assert search.visit_counts(0).sum() == 1999


# --- Gumbel root search ----------------------------------------------------------------


class ColumnEvaluator:
    """Connect 4 with fixed logits, and a value the position's last stone sets: after
    the first move into column a the player to move values the position 0.1 a - 0.3
    (so that move's Q at the root is 0.3 - 0.1 a); the empty board is worth 0.2."""

    logits = np.array([0.0, 1.0, 2.0, 0.5, 1.5, -1.0, 0.2], dtype=np.float32)

    def evaluate(self, planes):
        theirs = planes[:, 1].sum(axis=1)  # stones per column, by position
        values = np.where(
            theirs.sum(axis=1) > 0, 0.1 * np.argmax(theirs, axis=1) - 0.3, 0.2
        ).astype(np.float32)
        return np.tile(self.logits, (len(planes), 1)), values


def test_halving_schedule_splits_the_budget_in_rounds():
    from cartridge.mcts._search import halving_schedule

    table = halving_schedule(4, 16)
    assert table.shape == (5, 16)
    # Four actions twice each (log2 4 = 2 rounds of 8), then the better two four times.
    assert table[4].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert table[2].tolist()[:6] == [0, 0, 1, 1, 2, 2]
    assert table[1].tolist()[:3] == [0, 1, 2]  # one action: every walk is its


def test_gumbel_policy_target_on_a_hand_made_root():
    game = load("connect4")
    config = SearchConfig(root_search="gumbel", gumbel_considered=4, gumbel_scale=0.0)
    search = BatchedMCTS(game, 1, config)
    search.reset(0, game.new_initial_state())
    search.run(ColumnEvaluator(), 5)  # the root, then one walk to each considered action
    counts = search.visit_counts(0)
    logits = ColumnEvaluator.logits.astype(np.float64)
    considered = np.argsort(-logits)[:4]  # no Gumbel noise: the top four logits
    assert sorted(np.flatnonzero(counts)) == sorted(considered)
    assert counts[considered].tolist() == [1, 1, 1, 1]

    prior = np.exp(logits - logits.max())
    prior /= prior.sum()
    q = 0.3 - 0.1 * np.arange(7)
    visited = counts > 0
    mixed = (0.2 + 4 * (prior[visited] * q[visited]).sum() / prior[visited].sum()) / 5
    completed = np.where(visited, q, mixed)
    sigma = (50 + 1) * 0.1 * (completed - completed.min()) / (completed.max() - completed.min())
    expected = np.exp(np.log(prior) + sigma)
    np.testing.assert_allclose(search.policy(0), expected / expected.sum(), rtol=1e-4)
    # The move: the best of the most visited by logit + sigma (no noise), here column 4,
    # though column 2 has the highest prior: its Q is lower.
    assert search.select_action(0, 1.0) == int(np.argmax(np.where(visited, logits + sigma, -1e9)))
    assert search.select_action(0, 1.0) != int(np.argmax(logits))


@pytest.mark.parametrize("seed", range(5))
def test_gumbel_finds_a_win_with_few_simulations(seed):
    config = SearchConfig(root_search="gumbel", gumbel_considered=16)
    search = search_once(connect4(WIN_IN_ONE), 16, config, seed=seed)
    assert search.select_action(0, 1.0) == 3
    assert search.policy(0)[3] == search.policy(0).max()


def test_gumbel_samples_are_seeded_and_spread_the_opening():
    state = load("connect4").new_initial_state()
    config = SearchConfig(root_search="gumbel")
    moves = [search_once(state, 16, config, seed=s).select_action(0, 0.0) for s in range(40)]
    again = [search_once(state, 16, config, seed=s).select_action(0, 0.0) for s in range(40)]
    assert moves == again
    assert len(set(moves)) >= 3  # a uniform prior: the Gumbel samples choose


@pytest.mark.parametrize("first_simulations", [200, 16])
def test_gumbel_keeps_its_schedule_on_a_reused_subtree(first_simulations):
    # 200 then 16: the schedule follows the count; 16 twice: the kept table serves both.
    game = load("connect4")
    search = BatchedMCTS(game, 1, SearchConfig(root_search="gumbel", gumbel_considered=4))
    search.reset(0, game.new_initial_state())
    search.run(UniformEvaluator(game), first_simulations)
    action = search.select_action(0, 1.0)
    search.advance(0, action)
    before = search.visit_counts(0)
    search.run(UniformEvaluator(game), 16)
    added = search.visit_counts(0) - before
    # 16 simulations from the reused root: four actions twice, then two of them 4 times.
    assert added.sum() == 16
    assert sorted(added[added > 0].tolist()) == [2, 2, 6, 6]
