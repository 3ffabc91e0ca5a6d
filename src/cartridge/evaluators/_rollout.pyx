"""Random playouts from network-input planes, for the rollout evaluator.

The evaluator interface only hands over planes, so each board is rebuilt from
them (they hold everything the rules need) and played out with uniformly random
legal moves in C.
"""

import numpy as np

from libc.stdint cimport int16_t, uint64_t

from cartridge._rng cimport rng_below
from cartridge.games._engine cimport (
    MAX_ACTIONS, Board, apply_action, decode_planes, legal_actions,
)


cdef class RolloutRunner:
    cdef int game
    cdef uint64_t rng

    def __init__(self, int game_id, seed):
        self.game = game_id
        self.rng = <uint64_t>(int(seed) & 0xFFFFFFFFFFFFFFFF)

    def values(self, const float[:, :, :, ::1] planes, int rollouts):
        """Mean playout result for the side to move in each position, float32 [B]."""
        cdef Py_ssize_t batch = planes.shape[0], i
        out = np.zeros(batch, dtype=np.float32)
        cdef float[::1] result = out
        cdef Board start, board
        cdef int16_t actions[MAX_ACTIONS]
        cdef int r, n, sign
        cdef double total
        with nogil:
            for i in range(batch):
                decode_planes(self.game, &planes[i, 0, 0, 0], &start)
                total = 0.0
                for r in range(rollouts):
                    board = start
                    sign = 1
                    while not board.terminal:
                        n = legal_actions(self.game, &board, actions)
                        apply_action(self.game, &board, actions[rng_below(&self.rng, n)])
                        sign = -sign
                    total += sign * board.outcome
                result[i] = <float>(total / rollouts)
        return out
