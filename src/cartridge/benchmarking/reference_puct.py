"""The baseline the Cython search is measured against: PUCT written the plain Python way.

One object per node, children in a dict keyed by action, states from the public
`State` API; uniform priors and zero values like the uniform evaluator.
"""

from __future__ import annotations

import math

from cartridge.games import State


class _Node:
    __slots__ = ("state", "prior", "visits", "value_sum", "children")

    def __init__(self, state: State, prior: float):
        self.state = state
        self.prior = prior
        self.visits = 0
        self.value_sum = 0.0
        self.children: dict[int, _Node] = {}


def python_puct(root_state: State, simulations: int, c_puct: float = 1.5) -> dict[int, int]:
    """Run `simulations` PUCT simulations; returns visit counts per root action."""
    root = _Node(root_state, 1.0)
    for _ in range(simulations):
        node, path = root, [root]
        while node.children:
            total = math.sqrt(max(1, sum(c.visits for c in node.children.values())))
            node = max(
                node.children.values(),
                key=lambda c: (
                    (-c.value_sum / c.visits if c.visits else 0.0)
                    + c_puct * c.prior * total / (1 + c.visits)
                ),
            )
            path.append(node)
        if node.state.is_terminal():
            value = node.state.result(node.state.current_player)
        else:
            actions = node.state.legal_actions()
            node.children = {a: _Node(node.state.apply(a), 1.0 / len(actions)) for a in actions}
            value = 0.0
        for visited in reversed(path):
            visited.visits += 1
            visited.value_sum += value
            value = -value
    return {a: c.visits for a, c in root.children.items()}
