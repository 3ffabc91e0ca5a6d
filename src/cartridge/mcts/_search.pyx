"""Batched AlphaZero PUCT search over many independent game trees.

Each tree is a flat array of `Node` structs plus a flat array of `Edge` structs;
a node's children are one contiguous run of edges holding the paper's per-child
statistics N(s, a), W(s, a) and P(s, a). Nothing per node is a Python object,
so selection, expansion and backup run without the GIL.

One `run` call advances every active tree by a number of simulations. Each
step walks every tree down to `leaves_per_tree` new leaves (virtual loss pushes
later walks of the same tree elsewhere), writes all their input planes into one
buffer and makes a single `evaluator.evaluate(planes)` call for the whole batch.
Leaves that end the game are backed up with their exact value and never reach
the evaluator.

With `solver` on (MCTS-solver, Winands et al. 2008), exact values also travel up
the tree: a node with a child that is a proven loss for the opponent is a proven
win, a node whose children are all proven takes the best of their values. Walks
stop at proven nodes as at finished games, selection never enters a child proven
to win for the opponent, and a proven root needs no more simulations. Near the end
of a game the tree reaches every leaf within a few hundred simulations, so the
search's value there stops being an estimate.

With `root_search="gumbel"` (Gumbel MuZero, Danihelka et al., ICLR 2022) the root
chooses differently; interior nodes keep PUCT. Each action gets a Gumbel sample g(a)
once per root; sequential halving spends the simulations on the top actions by
g(a) + logit(a), halving them by g(a) + logit(a) + sigma(completed Q(a)) until one
is left, which is the move played. The policy target is softmax(logit + sigma(
completed Q)), which improves on the prior even when only a few actions were
visited: with 16-32 simulations a move it still teaches, where visit counts of so
few simulations say little.

Values are stored from the view of the player to move at the node that owns
the edge: W(s, a) sums outcomes for the player choosing `a` at `s`. Every move,
Othello's pass included, hands over the turn, so a value changes sign at each
ply on the way up.
"""

import numpy as np

from libc.math cimport exp, log, pow, sqrt
from libc.stdint cimport int8_t, int16_t, int32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from cartridge._rng cimport rng_below, rng_gamma, rng_uniform
from cartridge.games._engine cimport (
    MAX_ACTIONS, NUM_PLANES, Board, apply_action, board_height, board_width, decode_planes,
    encode_planes, legal_actions,
)
from cartridge.games._games cimport Game, State

from cartridge.mcts.config import SearchConfig


cdef enum NodeStatus:
    UNEVALUATED = 0   # created, waiting for the evaluator
    EXPANDED = 1      # has edges with priors
    TERMINAL = 2      # game over: value known exactly


cdef struct Edge:
    int32_t child      # node index, -1 until the edge is first walked
    int16_t action
    float prior        # P(s, a)
    int32_t visits     # N(s, a), virtual visits included while a walk is pending
    float value_sum    # W(s, a) for the player to move at s


cdef struct Node:
    Board board
    int32_t parent
    int32_t parent_edge
    int32_t first_edge
    int16_t num_edges
    int8_t status
    int32_t visits     # N(s): evaluations backed up through s, its own included
    float value_sum    # W(s) for the player to move at s
    float network_value  # v(s) as the evaluator gave it (Gumbel's mixed value needs it)
    int8_t proven      # `exact` holds the game-theoretic value (finished game or solver)
    float exact        # for the player to move at s, discounted per ply like backups


cdef struct Tree:
    Node* nodes
    Edge* edges
    int32_t num_nodes
    int32_t node_capacity
    int32_t num_edges
    int32_t edge_capacity
    int32_t root
    bint root_noised
    # Gumbel root search: g(a) by root edge, and this `run` call's halving schedule
    # (the relative visit count the next walk must find, by simulation) and the
    # root's edge visits when the call began.
    float gumbel[MAX_ACTIONS]
    const int32_t* halving
    int32_t halving_length
    int32_t start_visits[MAX_ACTIONS]


cdef struct Params:
    float c_puct
    float fpu_reduction
    float dirichlet_alpha
    float dirichlet_epsilon
    float virtual_loss
    int leaves_per_tree
    float value_discount
    bint solver
    bint gumbel
    int gumbel_considered
    float gumbel_scale
    float gumbel_c_visit
    float gumbel_c_scale


cdef bint tree_reserve(Tree* t, int32_t nodes, int32_t edges) noexcept nogil:
    """Grow the pools so `nodes` more nodes and `edges` more edges fit; False if out of memory."""
    cdef int32_t capacity
    cdef void* grown
    if t.num_nodes + nodes > t.node_capacity:
        capacity = max(2 * t.node_capacity, t.num_nodes + nodes)
        grown = realloc(t.nodes, capacity * sizeof(Node))
        if grown == NULL:
            return False
        t.nodes = <Node*>grown
        t.node_capacity = capacity
    if t.num_edges + edges > t.edge_capacity:
        capacity = max(2 * t.edge_capacity, t.num_edges + edges)
        grown = realloc(t.edges, capacity * sizeof(Edge))
        if grown == NULL:
            return False
        t.edges = <Edge*>grown
        t.edge_capacity = capacity
    return True


cdef int32_t tree_add_node(Tree* t, const Board* board, int32_t parent, int32_t parent_edge) noexcept nogil:
    """Append a node (capacity reserved by the caller)."""
    cdef int32_t index = t.num_nodes
    cdef Node* node = &t.nodes[index]
    node.board = board[0]
    node.parent = parent
    node.parent_edge = parent_edge
    node.first_edge = -1
    node.num_edges = 0
    node.visits = 0
    node.value_sum = 0.0
    node.network_value = 0.0
    mark_if_terminal(node)
    t.num_nodes += 1
    return index


cdef inline void mark_if_terminal(Node* node) noexcept nogil:
    """A finished game's value is known exactly: the first proven node of any search."""
    node.status = TERMINAL if node.board.terminal else UNEVALUATED
    node.proven = node.board.terminal
    node.exact = node.board.outcome if node.board.terminal else 0.0


cdef void tree_reset(Tree* t, const Board* board) noexcept nogil:
    t.num_nodes = 0
    t.num_edges = 0
    t.root = tree_add_node(t, board, -1, -1)
    t.root_noised = False
    t.halving = NULL


cdef void tree_reroot(Tree* t, int32_t new_root) noexcept nogil:
    """Keep only the subtree under `new_root`, copied breadth-first into fresh pools.

    Creation order is not breadth-first order, so the copy cannot be done in place.
    """
    cdef Node* nodes = <Node*>malloc(t.node_capacity * sizeof(Node))
    cdef Edge* edges = <Edge*>malloc(t.edge_capacity * sizeof(Edge))
    if nodes == NULL or edges == NULL:
        free(nodes)
        free(edges)
        tree_reset(t, &t.nodes[new_root].board)
        return
    cdef int32_t head = 0, count = 1, edge_count = 0, k
    cdef Node* node
    cdef Edge* edge
    nodes[0] = t.nodes[new_root]
    nodes[0].parent = -1
    nodes[0].parent_edge = -1
    while head < count:
        node = &nodes[head]
        if node.first_edge >= 0:
            memcpy(&edges[edge_count], &t.edges[node.first_edge], node.num_edges * sizeof(Edge))
            node.first_edge = edge_count
            for k in range(node.num_edges):
                edge = &edges[edge_count + k]
                if edge.child >= 0:
                    nodes[count] = t.nodes[edge.child]
                    nodes[count].parent = head
                    nodes[count].parent_edge = edge_count + k
                    edge.child = count
                    count += 1
            edge_count += node.num_edges
        head += 1
    free(t.nodes)
    free(t.edges)
    t.nodes = nodes
    t.edges = edges
    t.num_nodes = count
    t.num_edges = edge_count
    t.root = 0
    t.root_noised = False
    t.halving = NULL


cdef inline float node_q(const Node* node) noexcept nogil:
    return node.value_sum / node.visits if node.visits > 0 else 0.0


cdef inline bint proven_child(const Tree* t, const Edge* edge) noexcept nogil:
    """The move has been expanded into a position whose result the solver proved."""
    return edge.child >= 0 and t.nodes[edge.child].proven


cdef inline int32_t select_edge(const Tree* t, const Node* node, const Params* p,
                                bint solving) noexcept nogil:
    """argmax over children of Q(s, a) + U(s, a), U = c_puct P sqrt(sum_b N(s, b)) / (1 + N(s, a)).

    Unvisited children get the first-play-urgency value Q(s) - fpu_reduction, so
    a good position is explored mostly through its best prior instead of trying
    every child once.

    `solving` (MCTS-solver; a constant at each call, so the compiler drops the
    branches when it is off): a child proven to win for the opponent is never entered
    while an unproven sibling is left, and a proven child scores its exact value
    instead of its sample mean. A proven loss for the opponent never gets here: it
    proves this node, and walks stop at proven nodes.
    """
    cdef Edge* edges = &t.edges[node.first_edge]
    cdef const Node* child
    cdef int32_t best = -1, k
    cdef double parent_visits = 0.0
    for k in range(node.num_edges):
        parent_visits += edges[k].visits
    cdef double explore = p.c_puct * sqrt(parent_visits if parent_visits > 1.0 else 1.0)
    cdef double fpu = node_q(node) - p.fpu_reduction
    cdef double score, best_score = -1e30, q
    for k in range(node.num_edges):
        if solving and proven_child(t, &edges[k]):
            child = &t.nodes[edges[k].child]
            if child.exact > 0.0:
                continue
            q = -p.value_discount * child.exact
        elif edges[k].visits > 0:
            q = edges[k].value_sum / edges[k].visits
        else:
            q = fpu
        score = q + explore * edges[k].prior / (1.0 + edges[k].visits)
        if score > best_score:
            best_score = score
            best = k
    if best < 0:  # every child won for the opponent but the last proof is still pending
        return select_edge(t, node, p, False)
    return node.first_edge + best


cdef bint prove(Tree* t, int32_t index, float discount) noexcept nogil:
    """Prove node `index` from its children if they settle it; True when they do.

    One child proven to lose for the opponent makes it a win; otherwise every child
    must be proven, and the node's value is the best of theirs (a draw, or the
    slowest loss when values are discounted).
    """
    cdef Node* node = &t.nodes[index]
    if node.proven:
        return True
    if node.status != EXPANDED or node.num_edges == 0:
        return False
    cdef Edge* edges = &t.edges[node.first_edge]
    cdef bint settled = True
    cdef double best = -1e30, value
    cdef int k
    for k in range(node.num_edges):
        if not proven_child(t, &edges[k]):
            settled = False
            continue
        value = -discount * t.nodes[edges[k].child].exact
        if value > best:
            best = value
    if best > 0.0 or settled:
        node.proven = True
        node.exact = <float>best
        return True
    return False


cdef void prove_ancestors(Tree* t, int32_t index, float discount) noexcept nogil:
    """After node `index` was proven, prove every ancestor that now follows from it.

    Only a new proof can settle a parent, so this runs once per newly finished game
    reached by a walk and stops at the first ancestor still open.
    """
    cdef int32_t parent = t.nodes[index].parent
    while parent >= 0 and not t.nodes[parent].proven and prove(t, parent, discount):
        parent = t.nodes[parent].parent


cdef int32_t best_proven_edges(const Tree* t, const Node* node, bint* best) noexcept nogil:
    """At a proven node: flag the children whose exact value equals the node's (the
    moves that keep the proven result); returns how many."""
    cdef Edge* edges = &t.edges[node.first_edge]
    cdef const Node* child
    cdef double top = -1e30, value
    cdef int k, count = 0
    for k in range(node.num_edges):
        best[k] = False
        if proven_child(t, &edges[k]):
            value = -t.nodes[edges[k].child].exact
            if value > top:
                top = value
    for k in range(node.num_edges):
        if proven_child(t, &edges[k]):
            if -t.nodes[edges[k].child].exact == top:
                best[k] = True
                count += 1
    return count


cdef inline bint proven_loss_move(const Tree* t, const Edge* edge) noexcept nogil:
    """The move leads to a position proven won for the opponent."""
    return proven_child(t, edge) and t.nodes[edge.child].exact > 0.0


cdef void gumbel_scores(const Tree* t, const Node* node, const Params* p,
                        double* out) noexcept nogil:
    """log P(s, a) + sigma(completed Q(s, a)) for every edge of `node`.

    Completed Q: a visited action's Q, an unvisited one's the mixed value (the
    network's v(s) blended with the prior-weighted Q of the visited actions), so
    unvisited actions are neither favoured nor written off. The Q's are scaled to
    [0, 1] across the node, then sigma(q) = (c_visit + max_b N(s, b)) c_scale q: the
    more the search looked, the more its Q's outweigh the prior.
    """
    cdef Edge* edges = &t.edges[node.first_edge]
    cdef double q[MAX_ACTIONS]
    cdef double total_visits = 0.0, visited_prior = 0.0, visited_q = 0.0, most = 0.0
    cdef double mixed, low = 1e30, high = -1e30, scale
    cdef int k
    for k in range(node.num_edges):
        if proven_child(t, &edges[k]):
            q[k] = -p.value_discount * t.nodes[edges[k].child].exact
        elif edges[k].visits > 0:
            q[k] = edges[k].value_sum / edges[k].visits
        else:
            continue
        if edges[k].visits > 0:
            total_visits += edges[k].visits
            visited_prior += edges[k].prior
            visited_q += edges[k].prior * q[k]
            most = max(most, <double>edges[k].visits)
    if visited_prior > 0.0:
        mixed = (node.network_value + total_visits * visited_q / visited_prior) / (
            1.0 + total_visits)
    else:
        mixed = node.network_value
    for k in range(node.num_edges):
        if edges[k].visits <= 0 and not proven_child(t, &edges[k]):
            q[k] = mixed
        low = min(low, q[k])
        high = max(high, q[k])
    scale = (p.gumbel_c_visit + most) * p.gumbel_c_scale / max(high - low, 1e-8)
    for k in range(node.num_edges):
        out[k] = log(max(<double>edges[k].prior, 1e-30)) + scale * (q[k] - low)


cdef int32_t select_root_gumbel(const Tree* t, const Node* node, const Params* p) noexcept nogil:
    """Sequential halving at the root: the next walk goes to the best-scoring action
    (g + logit + sigma(completed Q)) among those this call has visited exactly as often
    as the schedule says; the schedule gives the top actions equal shares, then the
    top half of them, and so on. Counting visits relative to the call's start keeps
    the schedule right on a reused subtree.
    """
    cdef Edge* edges = &t.edges[node.first_edge]
    cdef double score[MAX_ACTIONS]
    cdef int32_t walked = 0, target, best = -1, fewest = -1, k, relative
    cdef double best_score = -1e300, fewest_score = -1e300, value
    gumbel_scores(t, node, p, score)
    for k in range(node.num_edges):
        walked += edges[k].visits - t.start_visits[k]
    target = t.halving[min(walked, t.halving_length - 1)]
    for k in range(node.num_edges):
        if p.solver and proven_loss_move(t, &edges[k]):
            continue
        relative = edges[k].visits - t.start_visits[k]
        value = t.gumbel[k] + score[k]
        if relative == target and value > best_score:
            best_score = value
            best = k
        # Fallback when no action matches (pending walks, moves proven lost): the
        # least visited, best scored.
        if fewest < 0 or relative < edges[fewest].visits - t.start_visits[fewest] or (
                relative == edges[fewest].visits - t.start_visits[fewest]
                and value > fewest_score):
            fewest = k
            fewest_score = value
    if best < 0:
        best = fewest if fewest >= 0 else 0
    return node.first_edge + best


cdef int gumbel_choice(const Tree* t, const Node* node, const Params* p) noexcept nogil:
    """The move Gumbel root search plays: among the most visited actions (the last
    ones sequential halving kept), the best g + logit + sigma(completed Q)."""
    cdef Edge* edges = &t.edges[node.first_edge]
    cdef double score[MAX_ACTIONS]
    cdef int32_t most = -1
    cdef int k, best = -1
    cdef double best_score = -1e300
    gumbel_scores(t, node, p, score)
    for k in range(node.num_edges):
        if not (p.solver and proven_loss_move(t, &edges[k])):
            most = max(most, edges[k].visits)
    for k in range(node.num_edges):
        if p.solver and proven_loss_move(t, &edges[k]):
            continue
        if edges[k].visits == most and t.gumbel[k] + score[k] > best_score:
            best_score = t.gumbel[k] + score[k]
            best = k
    return best if best >= 0 else 0


cdef void start_halving(Tree* t, const Params* p, const int32_t* table,
                        int simulations) noexcept nogil:
    """Point tree `t` at its row of this call's halving schedule (by how many actions
    its root considers) and note the visits its root edges start the call with."""
    cdef Node* root = &t.nodes[t.root]
    cdef int k
    if root.status != EXPANDED or root.num_edges == 0:
        return  # the root's own evaluation comes first; called again after it
    t.halving = table + min(<int>root.num_edges, p.gumbel_considered) * simulations
    t.halving_length = simulations
    for k in range(root.num_edges):
        t.start_visits[k] = t.edges[root.first_edge + k].visits


def halving_schedule(int considered, int simulations):
    """Sequential halving as a visit schedule: entry j is how many visits (in this
    search) the action walked by simulation j has before it, for each number of
    considered actions m = 0..considered; int32 [considered + 1, simulations].

    Each round gives every one of the m actions left the same number of visits, so
    that all rounds (log2 m of them) share the budget; then the better half stays.
    """
    table = np.zeros((considered + 1, max(simulations, 1)), dtype=np.int32)
    for m in range(considered + 1):
        if m <= 1:
            table[m] = np.arange(table.shape[1])
            continue
        rounds = int(np.ceil(np.log2(m)))
        visits, left, row = [0] * m, m, []
        while len(row) < simulations:
            per_action = max(1, simulations // (rounds * left))
            for _ in range(per_action):
                row.extend(visits[:left])
                for k in range(left):
                    visits[k] += 1
            left = max(2, left // 2)
        table[m] = row[:table.shape[1]]
    return table


cdef void backup(Tree* t, int32_t leaf, float value, float undo_virtual,
                 float discount) noexcept nogil:
    """Add `value` (for the player to move at `leaf`) along the path to the root.

    `undo_virtual` is the virtual loss the walk down added to every edge on the path.
    Each ply up scales the value by `discount` (1 = plain AlphaZero), so a win k plies
    away is worth discount^k: among winning moves the quickest scores highest, and
    among losing ones the slowest, as self-play's discounted value targets teach.
    """
    cdef int32_t index = leaf
    cdef Node* node
    cdef Edge* edge
    while index >= 0:
        node = &t.nodes[index]
        node.visits += 1
        node.value_sum += value
        if node.parent_edge >= 0:
            edge = &t.edges[node.parent_edge]
            edge.visits += 1 - <int32_t>undo_virtual
            edge.value_sum += -value * discount + undo_virtual
        value = -value * discount
        index = node.parent


cdef void undo_walk(Tree* t, int32_t leaf, float virtual_loss) noexcept nogil:
    """Take back the virtual loss of a walk that ended on a leaf already pending."""
    cdef int32_t index = leaf
    cdef Node* node
    cdef Edge* edge
    while index >= 0:
        node = &t.nodes[index]
        if node.parent_edge >= 0:
            edge = &t.edges[node.parent_edge]
            edge.visits -= <int32_t>virtual_loss
            edge.value_sum += virtual_loss
        index = node.parent


cdef int32_t walk_to_leaf(Tree* t, int game, const Params* p) noexcept nogil:
    """Descend from the root, creating the leaf node at the end of the path.

    Returns the leaf index, -1 when the walk hit a leaf still waiting for the
    evaluator (a collision: its virtual loss is already undone), or -2 when out of memory.
    """
    cdef int32_t index = t.root, edge_index, child
    cdef Node* node
    cdef Edge* edge
    cdef int vl = <int>p.virtual_loss
    while True:
        node = &t.nodes[index]
        if node.status != EXPANDED or node.proven:
            if node.status == UNEVALUATED and node.visits < 0:
                undo_walk(t, index, p.virtual_loss)
                return -1
            return index
        if p.gumbel and index == t.root and t.halving != NULL:
            edge_index = select_root_gumbel(t, node, p)
        elif p.solver:
            edge_index = select_edge(t, node, p, True)
        else:
            edge_index = select_edge(t, node, p, False)
        edge = &t.edges[edge_index]
        edge.visits += vl
        edge.value_sum -= p.virtual_loss
        child = edge.child
        if child < 0:
            if not tree_reserve(t, 1, 0):
                return -2
            node = &t.nodes[index]           # the pool may have moved
            child = tree_add_node(t, &node.board, index, edge_index)
            apply_action(game, &t.nodes[child].board, t.edges[edge_index].action)
            mark_if_terminal(&t.nodes[child])
            t.edges[edge_index].child = child
            return child
        index = child


cdef void add_root_noise(Tree* t, const Params* p, uint64_t* rng) noexcept nogil:
    """Once per root: Gumbel samples g(a) for Gumbel root search, else Dir(alpha)
    noise mixed into the root priors, as AlphaZero's self-play does."""
    cdef Node* root = &t.nodes[t.root]
    cdef int k
    if root.status != EXPANDED or root.num_edges == 0:
        return
    if p.gumbel:
        for k in range(root.num_edges):
            t.gumbel[k] = <float>(-p.gumbel_scale * log(-log(rng_uniform(rng) + 1e-300)))
        t.root_noised = True
        return
    if p.dirichlet_epsilon <= 0.0:
        return
    cdef double noise[MAX_ACTIONS]
    cdef double total = 0.0
    for k in range(root.num_edges):
        noise[k] = rng_gamma(rng, p.dirichlet_alpha)
        total += noise[k]
    if total <= 0.0:
        return
    cdef Edge* edges = &t.edges[root.first_edge]
    for k in range(root.num_edges):
        edges[k].prior = <float>((1.0 - p.dirichlet_epsilon) * edges[k].prior
                                 + p.dirichlet_epsilon * noise[k] / total)
    t.root_noised = True


cdef bint expand(Tree* t, int game, int32_t index, const float* logits) noexcept nogil:
    """Give an evaluated node one edge per legal action, priors = softmax of legal logits."""
    cdef int16_t actions[MAX_ACTIONS]
    cdef double weights[MAX_ACTIONS]
    cdef int n = legal_actions(game, &t.nodes[index].board, actions), k
    if not tree_reserve(t, 0, n):
        return False
    cdef double top = -1e30, total = 0.0
    for k in range(n):
        if logits[actions[k]] > top:
            top = logits[actions[k]]
    for k in range(n):
        weights[k] = exp(logits[actions[k]] - top)
        total += weights[k]
    cdef Node* node = &t.nodes[index]
    node.first_edge = t.num_edges
    node.num_edges = n
    node.status = EXPANDED
    cdef Edge* edge
    for k in range(n):
        edge = &t.edges[t.num_edges + k]
        edge.child = -1
        edge.action = actions[k]
        edge.prior = <float>(weights[k] / total)
        edge.visits = 0
        edge.value_sum = 0.0
    t.num_edges += n
    return True


cdef class BatchedMCTS:
    """PUCT search over `num_trees` independent trees evaluated in shared batches.

    Typical use (self-play): `reset(i, state)` each tree, then per move
    `run(evaluator, simulations)`, read `visit_counts(i)`, pick an action and
    `advance(i, action)` to keep the chosen subtree.
    """

    cdef Tree* trees
    cdef readonly int num_trees
    cdef readonly Game game
    cdef readonly object config
    cdef Params params
    cdef uint64_t rng
    cdef object planes           # float32 [num_trees * leaves_per_tree, C, H, W]
    cdef object halving          # the last run call's schedule, kept alive for Tree.halving
    cdef int32_t[:, ::1] pending  # (tree, node) per batch row

    def __cinit__(self, Game game, int num_trees, config=None, seed=0):
        if num_trees < 1:
            raise ValueError(f"num_trees must be at least 1, got {num_trees}")
        self.trees = <Tree*>malloc(num_trees * sizeof(Tree))
        if self.trees == NULL:
            raise MemoryError()
        self.num_trees = num_trees
        cdef int i
        for i in range(num_trees):
            self.trees[i].nodes = NULL
            self.trees[i].edges = NULL
            self.trees[i].node_capacity = 0
            self.trees[i].edge_capacity = 0
            self.trees[i].num_nodes = 0
            self.trees[i].num_edges = 0
            self.trees[i].root = -1
            self.trees[i].root_noised = False
            self.trees[i].halving = NULL

    def __init__(self, Game game, int num_trees, config=None, seed=0):
        self.game = game
        self.config = SearchConfig() if config is None else SearchConfig.model_validate(config)
        cfg = self.config
        self.params.c_puct = cfg.c_puct
        self.params.fpu_reduction = cfg.fpu_reduction
        self.params.dirichlet_alpha = cfg.dirichlet_alpha
        self.params.dirichlet_epsilon = cfg.dirichlet_epsilon
        self.params.virtual_loss = cfg.virtual_loss
        self.params.leaves_per_tree = cfg.leaves_per_tree
        self.params.value_discount = cfg.value_discount
        self.params.solver = cfg.solver
        self.params.gumbel = cfg.root_search == "gumbel"
        self.params.gumbel_considered = cfg.gumbel_considered
        self.params.gumbel_scale = cfg.gumbel_scale
        self.params.gumbel_c_visit = cfg.gumbel_c_visit
        self.params.gumbel_c_scale = cfg.gumbel_c_scale
        self.rng = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)
        rows = num_trees * cfg.leaves_per_tree
        self.planes = np.zeros((rows, NUM_PLANES, board_height(game.game_id),
                                board_width(game.game_id)), dtype=np.float32)
        self.pending = np.zeros((rows, 2), dtype=np.int32)
        cdef int i
        for i in range(num_trees):
            if not tree_reserve(&self.trees[i], 1024, 4096):
                raise MemoryError()

    def __dealloc__(self):
        cdef int i
        if self.trees != NULL:
            for i in range(self.num_trees):
                free(self.trees[i].nodes)
                free(self.trees[i].edges)
            free(self.trees)

    cdef Tree* _tree(self, int i) except NULL:
        if not 0 <= i < self.num_trees:
            raise IndexError(f"tree {i} out of range 0..{self.num_trees - 1}")
        if self.trees[i].root < 0:
            raise ValueError(f"tree {i} has no root yet: call reset({i}, state) first")
        return &self.trees[i]

    def reset(self, int i, State state):
        """Make `state` the root of tree `i`, discarding its old tree."""
        if not 0 <= i < self.num_trees:
            raise IndexError(f"tree {i} out of range 0..{self.num_trees - 1}")
        if state.game.game_id != self.game.game_id:
            raise ValueError(f"a {state.game.name} state cannot root a {self.game.name} search")
        tree_reset(&self.trees[i], &state.board)

    def reset_from_planes(self, planes):
        """Root trees 0..len(planes)-1 at the positions these input planes show
        (float32 [n, C, H, W], the side to move first), as replay records them."""
        cdef int game = self.game.game_id
        cdef Board board
        cdef int i
        array = np.ascontiguousarray(planes, dtype=np.float32)
        expected = (NUM_PLANES, board_height(game), board_width(game))
        if array.ndim != 4 or array.shape[1:] != expected:
            raise ValueError(f"planes of shape {array.shape} do not show {self.game.name} "
                             f"positions: expected (n, {', '.join(map(str, expected))})")
        if len(array) > self.num_trees:
            raise ValueError(f"{len(array)} positions for {self.num_trees} trees")
        cdef float[:, :, :, ::1] view = array
        for i in range(len(array)):
            decode_planes(game, &view[i, 0, 0, 0], &board)
            if board.terminal:
                raise ValueError(f"position {i} is a finished game; nothing to search")
            tree_reset(&self.trees[i], &board)

    def advance(self, int i, int action):
        """Play `action` at the root of tree `i`, keeping its subtree (statistics and all)."""
        cdef Tree* t = self._tree(i)
        cdef Node* root = &t.nodes[t.root]
        cdef int k
        cdef Board board
        if root.status == EXPANDED:
            for k in range(root.num_edges):
                if t.edges[root.first_edge + k].action == action:
                    if t.edges[root.first_edge + k].child >= 0:
                        tree_reroot(t, t.edges[root.first_edge + k].child)
                        return
                    break
        state = self.root_state(i)
        board = (<State>state.apply(action)).board   # validates the action
        tree_reset(t, &board)

    def root_state(self, int i):
        cdef Tree* t = self._tree(i)
        return State.wrap(self.game, t.nodes[t.root].board)

    def tree_size(self, int i):
        """Nodes currently held by tree `i` (after subtree reuse, the kept part)."""
        return self._tree(i).num_nodes

    def run(self, evaluator, int simulations, active=None):
        """Add `simulations` simulations to each active tree, one evaluator call per step.

        `active` is a bool mask over trees (default: all). A simulation is one walk
        that ends in a backed-up value: a newly evaluated leaf or a finished game.
        Returns the number of simulations done.
        """
        if simulations < 1:
            raise ValueError(f"simulations must be at least 1, got {simulations}")
        cdef int n = self.num_trees, i, j, rows, leaf_count
        cdef int game = self.game.game_id
        cdef int num_actions = self.game.num_actions
        remaining_array = np.zeros(n, dtype=np.int32)
        cdef int32_t[::1] remaining = remaining_array
        mask = np.ones(n, dtype=bool) if active is None else np.asarray(active, dtype=bool)
        if mask.shape != (n,):
            raise ValueError(f"active must be a bool mask of {n} trees, got shape {mask.shape}")
        if self.params.gumbel and (self.halving is None or self.halving.shape[1] != simulations):
            # Self-play calls run once a move with the same count: build the table once.
            self.halving = halving_schedule(self.params.gumbel_considered, simulations)
        cdef int32_t[:, ::1] halving = self.halving if self.params.gumbel else None
        for i in range(n):
            self.trees[i].halving = NULL
            if mask[i]:
                self._tree(i)
                if self.trees[i].nodes[self.trees[i].root].status == TERMINAL:
                    raise ValueError(f"tree {i} is rooted at a finished game; nothing to search")
                remaining[i] = 0 if self.trees[i].nodes[self.trees[i].root].proven else simulations
                if not self.trees[i].root_noised:
                    add_root_noise(&self.trees[i], &self.params, &self.rng)
                if self.params.gumbel:
                    start_halving(&self.trees[i], &self.params, &halving[0, 0], simulations)
        cdef float[:, :, :, ::1] planes = self.planes
        cdef int32_t[:, ::1] pending = self.pending
        cdef float[:, ::1] logits
        cdef float[::1] values
        cdef int32_t leaf
        cdef long total = 0
        cdef int plane_size = NUM_PLANES * board_height(game) * board_width(game)
        cdef Tree* tree
        cdef bint any_left = True
        cdef bint out_of_memory = False
        cdef float vl = self.params.virtual_loss
        while any_left:
            rows = 0
            with nogil:
                for i in range(n):
                    tree = &self.trees[i]
                    leaf_count = 0
                    while remaining[i] > 0 and leaf_count < self.params.leaves_per_tree:
                        leaf = walk_to_leaf(tree, game, &self.params)
                        if leaf == -2:
                            out_of_memory = True
                            break
                        if leaf == -1:
                            break
                        if tree.nodes[leaf].proven:
                            if self.params.solver and tree.nodes[leaf].visits == 0:
                                prove_ancestors(tree, leaf, self.params.value_discount)
                            backup(tree, leaf, tree.nodes[leaf].exact,
                                   vl if leaf != tree.root else 0.0,
                                   self.params.value_discount)
                            remaining[i] -= 1
                            total += 1
                            if tree.nodes[tree.root].proven:
                                remaining[i] = 0  # the root's result is known: stop
                            continue
                        # Mark pending with negative visits so a second walk sees a collision.
                        tree.nodes[leaf].visits = -1
                        encode_planes(game, &tree.nodes[leaf].board, &planes[rows, 0, 0, 0])
                        pending[rows, 0] = i
                        pending[rows, 1] = leaf
                        rows += 1
                        leaf_count += 1
                        remaining[i] -= 1
                if rows == 0:
                    any_left = False
                    for i in range(n):
                        if remaining[i] > 0:
                            any_left = True
            if out_of_memory:
                raise MemoryError("search tree pools could not grow")
            if rows == 0:
                continue
            logits, values = _evaluate(evaluator, self.planes[:rows], rows, num_actions)
            with nogil:
                for j in range(rows):
                    tree = &self.trees[pending[j, 0]]
                    leaf = pending[j, 1]
                    tree.nodes[leaf].visits = 0
                    tree.nodes[leaf].network_value = values[j]
                    if not expand(tree, game, leaf, &logits[j, 0]):
                        out_of_memory = True
                        break
                    if leaf == tree.root and not tree.root_noised:
                        add_root_noise(tree, &self.params, &self.rng)
                    if leaf == tree.root and self.params.gumbel:
                        start_halving(tree, &self.params, &halving[0, 0], simulations)
                    backup(tree, leaf, values[j], vl if leaf != tree.root else 0.0,
                           self.params.value_discount)
                total += rows
            if out_of_memory:
                raise MemoryError("search tree pools could not grow")
        return total

    def visit_counts(self, int i):
        """N(root, a) for every action (zeros for illegal ones), int32 [num_actions]."""
        return self._root_edge_values(i, np.int32)

    def priors(self, int i):
        """P(root, a) as used by the search (after noise), float32 [num_actions]."""
        return self._root_edge_values(i, np.float32)

    cdef object _root_edge_values(self, int i, dtype):
        """Visit counts (int32) or priors (float32) of the root's edges, by action."""
        cdef Tree* t = self._tree(i)
        out = np.zeros(self.game.num_actions, dtype=dtype)
        cdef Node* root = &t.nodes[t.root]
        cdef Edge* edge
        cdef int k
        cdef bint counts = dtype == np.int32
        if root.status == EXPANDED:
            for k in range(root.num_edges):
                edge = &t.edges[root.first_edge + k]
                out[edge.action] = edge.visits if counts else edge.prior
        return out

    def root_value(self, int i):
        """Value at the root for the player to move there, in [-1, 1]: the exact one
        when the root is proven, else the mean backed-up value."""
        cdef Tree* t = self._tree(i)
        cdef Node* root = &t.nodes[t.root]
        return float(root.exact if root.proven else node_q(root))

    def proven_value(self, int i):
        """The root's game-theoretic value for the player to move (discounted per ply
        like the search's values) when the solver has proven it, else None."""
        cdef Tree* t = self._tree(i)
        cdef Node* root = &t.nodes[t.root]
        return float(root.exact) if root.proven else None

    def policy(self, int i, double temperature=1.0):
        """Visit-count policy pi(a) proportional to N(root, a)^(1/temperature).

        Temperature 0 puts all mass on the most visited actions (shared on a tie). At a
        proven root the mass is shared by the moves that keep the proven result, at any
        temperature: the visits that found the proof say less than the proof.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        proven = self._proven_moves(i)
        if proven is not None:
            return (proven / proven.sum()).astype(np.float32)
        if self.params.gumbel:
            return self._gumbel_policy(i)
        counts = self.visit_counts(i).astype(np.float64)
        if counts.sum() <= 0:
            raise ValueError(f"tree {i} has no visits yet: run the search first")
        if temperature == 0:
            weights = (counts == counts.max()).astype(np.float64)
        else:
            weights = np.power(counts / counts.max(), 1.0 / temperature)
        return (weights / weights.sum()).astype(np.float32)

    cdef object _gumbel_policy(self, int i):
        """Gumbel's policy target: softmax(logit + sigma(completed Q)) over legal actions."""
        cdef Tree* t = self._tree(i)
        cdef Node* root = &t.nodes[t.root]
        cdef double score[MAX_ACTIONS]
        cdef int k
        if root.status != EXPANDED or root.num_edges == 0:
            raise ValueError(f"tree {i} has no visits yet: run the search first")
        gumbel_scores(t, root, &self.params, score)
        top = max(score[k] for k in range(root.num_edges))
        out = np.zeros(self.game.num_actions, dtype=np.float64)
        for k in range(root.num_edges):
            out[t.edges[root.first_edge + k].action] = exp(score[k] - top)
        return (out / out.sum()).astype(np.float32)

    cdef object _proven_moves(self, int i):
        """At a proven root, 1.0 for each action that keeps the proven result (by
        action, float64 [num_actions]); None when the root is not proven."""
        cdef Tree* t = self._tree(i)
        cdef Node* root = &t.nodes[t.root]
        cdef bint best[MAX_ACTIONS]
        cdef int k
        if not root.proven or root.status != EXPANDED:
            return None
        best_proven_edges(t, root, best)
        out = np.zeros(self.game.num_actions, dtype=np.float64)
        for k in range(root.num_edges):
            if best[k]:
                out[t.edges[root.first_edge + k].action] = 1.0
        return out

    def select_action(self, int i, double temperature=1.0):
        """Sample an action from `policy(i, temperature)` with the search's own seeded RNG.

        Computed over the root's edges in C: it runs once per move of every game. A
        proven root plays a move that keeps its result at any temperature (the most
        visited of them), so a proven win is never thrown away to sampling. Gumbel
        root search plays the action sequential halving kept, at any temperature: its
        Gumbel samples already made the choice random.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        cdef Tree* t = self._tree(i)
        cdef Node* root = &t.nodes[t.root]
        cdef Edge* edges = &t.edges[root.first_edge]
        cdef int k, most = 0, pick = -1
        cdef double weights[MAX_ACTIONS]
        cdef bint best[MAX_ACTIONS]
        cdef double total = 0.0, u
        if root.status != EXPANDED or root.num_edges == 0:
            raise ValueError(f"tree {i} has no visits yet: run the search first")
        if root.proven:
            best_proven_edges(t, root, best)
            for k in range(root.num_edges):
                if best[k] and (pick < 0 or edges[k].visits > edges[pick].visits):
                    pick = k
            return int(edges[pick].action)
        if self.params.gumbel:
            if root.visits <= 0:
                raise ValueError(f"tree {i} has no visits yet: run the search first")
            return int(edges[gumbel_choice(t, root, &self.params)].action)
        for k in range(root.num_edges):
            most = max(most, edges[k].visits)
        if most == 0:
            raise ValueError(f"tree {i} has no visits yet: run the search first")
        for k in range(root.num_edges):
            if temperature == 0:
                weights[k] = 1.0 if edges[k].visits == most else 0.0
            else:
                weights[k] = pow(<double>edges[k].visits / most, 1.0 / temperature)
            total += weights[k]
        u = rng_uniform(&self.rng) * total
        for k in range(root.num_edges):
            if weights[k] > 0.0:
                pick = k
                if u < weights[k]:
                    break
                u -= weights[k]
        return int(edges[pick].action)


def _evaluate(evaluator, planes, int rows, int num_actions):
    logits, values = evaluator.evaluate(planes)
    logits = np.ascontiguousarray(logits, dtype=np.float32)
    values = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    if logits.shape != (rows, num_actions) or values.shape != (rows,):
        raise ValueError(f"evaluator returned policy_logits {logits.shape} and value "
                         f"{values.shape} for a batch of {rows}; expected ({rows}, "
                         f"{num_actions}) and ({rows},)")
    if not (np.isfinite(values).all() and np.isfinite(logits).all()):
        raise ValueError("evaluator returned non-finite policy logits or values")
    return logits, values
