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

Values are stored from the view of the player to move at the node that owns
the edge: W(s, a) sums outcomes for the player choosing `a` at `s`. Every move,
Othello's pass included, hands over the turn, so a value changes sign at each
ply on the way up.
"""

import numpy as np

from libc.math cimport exp, pow, sqrt
from libc.stdint cimport int8_t, int16_t, int32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

from cartridge._rng cimport rng_below, rng_gamma, rng_uniform
from cartridge.games._engine cimport (
    MAX_ACTIONS, NUM_PLANES, Board, apply_action, board_height, board_width, encode_planes,
    legal_actions,
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


cdef struct Tree:
    Node* nodes
    Edge* edges
    int32_t num_nodes
    int32_t node_capacity
    int32_t num_edges
    int32_t edge_capacity
    int32_t root
    bint root_noised


cdef struct Params:
    float c_puct
    float fpu_reduction
    float dirichlet_alpha
    float dirichlet_epsilon
    float virtual_loss
    int leaves_per_tree
    float value_discount


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
    node.status = TERMINAL if board.terminal else UNEVALUATED
    node.visits = 0
    node.value_sum = 0.0
    t.num_nodes += 1
    return index


cdef void tree_reset(Tree* t, const Board* board) noexcept nogil:
    t.num_nodes = 0
    t.num_edges = 0
    t.root = tree_add_node(t, board, -1, -1)
    t.root_noised = False


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


cdef inline float node_q(const Node* node) noexcept nogil:
    return node.value_sum / node.visits if node.visits > 0 else 0.0


cdef int32_t select_edge(const Tree* t, const Node* node, const Params* p) noexcept nogil:
    """argmax over children of Q(s, a) + U(s, a), U = c_puct P sqrt(sum_b N(s, b)) / (1 + N(s, a)).

    Unvisited children get the first-play-urgency value Q(s) - fpu_reduction, so
    a good position is explored mostly through its best prior instead of trying
    every child once.
    """
    cdef Edge* edges = &t.edges[node.first_edge]
    cdef int32_t best = 0, k
    cdef double parent_visits = 0.0
    for k in range(node.num_edges):
        parent_visits += edges[k].visits
    cdef double explore = p.c_puct * sqrt(parent_visits if parent_visits > 1.0 else 1.0)
    cdef double fpu = node_q(node) - p.fpu_reduction
    cdef double score, best_score = -1e30, q
    for k in range(node.num_edges):
        if edges[k].visits > 0:
            q = edges[k].value_sum / edges[k].visits
        else:
            q = fpu
        score = q + explore * edges[k].prior / (1.0 + edges[k].visits)
        if score > best_score:
            best_score = score
            best = k
    return node.first_edge + best


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
        if node.status != EXPANDED:
            if node.status == UNEVALUATED and node.visits < 0:
                undo_walk(t, index, p.virtual_loss)
                return -1
            return index
        edge_index = select_edge(t, node, p)
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
            if t.nodes[child].board.terminal:
                t.nodes[child].status = TERMINAL
            t.edges[edge_index].child = child
            return child
        index = child


cdef void add_dirichlet_noise(Tree* t, const Params* p, uint64_t* rng) noexcept nogil:
    """Mix Dir(alpha) noise into the root priors, once per move, as AlphaZero's self-play does."""
    cdef Node* root = &t.nodes[t.root]
    if root.status != EXPANDED or root.num_edges == 0 or p.dirichlet_epsilon <= 0.0:
        return
    cdef double noise[MAX_ACTIONS]
    cdef double total = 0.0
    cdef int k
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
        for i in range(n):
            if mask[i]:
                self._tree(i)
                if self.trees[i].nodes[self.trees[i].root].status == TERMINAL:
                    raise ValueError(f"tree {i} is rooted at a finished game; nothing to search")
                remaining[i] = simulations
                if not self.trees[i].root_noised:
                    add_dirichlet_noise(&self.trees[i], &self.params, &self.rng)
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
                        if tree.nodes[leaf].status == TERMINAL:
                            backup(tree, leaf, tree.nodes[leaf].board.outcome,
                                   vl if leaf != tree.root else 0.0,
                                   self.params.value_discount)
                            remaining[i] -= 1
                            total += 1
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
                    if not expand(tree, game, leaf, &logits[j, 0]):
                        out_of_memory = True
                        break
                    if leaf == tree.root and not tree.root_noised:
                        add_dirichlet_noise(tree, &self.params, &self.rng)
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
        """Mean backed-up value at the root for the player to move there, in [-1, 1]."""
        cdef Tree* t = self._tree(i)
        return float(node_q(&t.nodes[t.root]))

    def policy(self, int i, double temperature=1.0):
        """Visit-count policy pi(a) proportional to N(root, a)^(1/temperature).

        Temperature 0 puts all mass on the most visited actions (shared on a tie).
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        counts = self.visit_counts(i).astype(np.float64)
        if counts.sum() <= 0:
            raise ValueError(f"tree {i} has no visits yet: run the search first")
        if temperature == 0:
            weights = (counts == counts.max()).astype(np.float64)
        else:
            weights = np.power(counts / counts.max(), 1.0 / temperature)
        return (weights / weights.sum()).astype(np.float32)

    def select_action(self, int i, double temperature=1.0):
        """Sample an action from `policy(i, temperature)` with the search's own seeded RNG.

        Computed over the root's edges in C: it runs once per move of every game.
        """
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        cdef Tree* t = self._tree(i)
        cdef Node* root = &t.nodes[t.root]
        cdef Edge* edges = &t.edges[root.first_edge]
        cdef int k, most = 0, ties = 0, pick
        cdef double weights[MAX_ACTIONS]
        cdef double total = 0.0, u
        if root.status != EXPANDED or root.num_edges == 0:
            raise ValueError(f"tree {i} has no visits yet: run the search first")
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
