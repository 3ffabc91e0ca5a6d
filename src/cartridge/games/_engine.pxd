"""Bitboard engines for TicTacToe, Connect 4 and Othello, inlined into every caller.

All three games share one `Board` struct so the search can hold any of them in a
flat node array with no Python object per position. The board is always stored
from the side to move ("mine" / "theirs") and every action, an Othello pass
included, hands the move to the other player. That makes the value of a
position flip sign at every ply, which is all the search's backup needs to know.

Bit layouts:
- TicTacToe: bit r*3 + c, row 0 at the top.
- Connect 4: bit c*7 + h, h = 0 the bottom cell of column c; bit 6 of each
  column is an always-empty sentinel so the shift tricks for alignments and the
  "mask + bottom" drop never carry into the next column.
- Othello: bit r*8 + c, row 0 is rank 1 (a1 top-left), action 64 is a pass.
"""

from libc.stdint cimport int8_t, int16_t, uint64_t


cdef extern from *:
    int popcount64 "__builtin_popcountll"(unsigned long long) nogil
    int lowest_bit "__builtin_ctzll"(unsigned long long) nogil


cdef enum:
    TICTACTOE = 0
    CONNECT4 = 1
    OTHELLO = 2
    NUM_PLANES = 2
    MAX_ACTIONS = 65
    OTHELLO_PASS = 64


cdef struct Board:
    uint64_t mine      # stones of the side to move
    uint64_t theirs    # stones of the side that just moved
    int16_t ply        # plies played from the start (passes included)
    int8_t to_move     # 0 for the first player, 1 for the second
    int8_t terminal
    int8_t outcome     # when terminal: +1 win, 0 draw, -1 loss for the side to move


# ---------------------------------------------------------------- TicTacToe

cdef inline bint ttt_has_line(uint64_t s) noexcept nogil:
    return ((s & 0x7) == 0x7 or (s & 0x38) == 0x38 or (s & 0x1C0) == 0x1C0
            or (s & 0x49) == 0x49 or (s & 0x92) == 0x92 or (s & 0x124) == 0x124
            or (s & 0x111) == 0x111 or (s & 0x54) == 0x54)


# ---------------------------------------------------------------- Connect 4

cdef inline uint64_t c4_bottom(int column) noexcept nogil:
    return (<uint64_t>1) << (column * 7)


cdef inline uint64_t c4_top(int column) noexcept nogil:
    return (<uint64_t>1) << (column * 7 + 5)


cdef inline uint64_t c4_column(int column) noexcept nogil:
    return (<uint64_t>0x3F) << (column * 7)


cdef inline bint c4_has_four(uint64_t s) noexcept nogil:
    cdef uint64_t m = s & (s >> 7)          # horizontal
    if m & (m >> 14):
        return True
    m = s & (s >> 6)                         # diagonal, down-right
    if m & (m >> 12):
        return True
    m = s & (s >> 8)                         # diagonal, up-right
    if m & (m >> 16):
        return True
    m = s & (s >> 1)                         # vertical
    return (m & (m >> 2)) != 0


# ---------------------------------------------------------------- Othello

cdef inline uint64_t oth_shift(uint64_t b, int direction) noexcept nogil:
    # Masks drop stones that would wrap from one edge file to the other.
    if direction == 0:
        return (b << 1) & 0xFEFEFEFEFEFEFEFEULL
    elif direction == 1:
        return (b >> 1) & 0x7F7F7F7F7F7F7F7FULL
    elif direction == 2:
        return b << 8
    elif direction == 3:
        return b >> 8
    elif direction == 4:
        return (b << 9) & 0xFEFEFEFEFEFEFEFEULL
    elif direction == 5:
        return (b << 7) & 0x7F7F7F7F7F7F7F7FULL
    elif direction == 6:
        return (b >> 7) & 0xFEFEFEFEFEFEFEFEULL
    return (b >> 9) & 0x7F7F7F7F7F7F7F7FULL


cdef inline uint64_t oth_moves(uint64_t me, uint64_t opp) noexcept nogil:
    cdef uint64_t empty = ~(me | opp)
    cdef uint64_t moves = 0, run
    cdef int d
    for d in range(8):
        run = oth_shift(me, d) & opp
        run |= oth_shift(run, d) & opp
        run |= oth_shift(run, d) & opp
        run |= oth_shift(run, d) & opp
        run |= oth_shift(run, d) & opp
        run |= oth_shift(run, d) & opp
        moves |= oth_shift(run, d) & empty
    return moves


cdef inline uint64_t oth_flips(uint64_t me, uint64_t opp, int square) noexcept nogil:
    cdef uint64_t flips = 0, line, x
    cdef int d
    for d in range(8):
        line = 0
        x = oth_shift((<uint64_t>1) << square, d)
        while x & opp:
            line |= x
            x = oth_shift(x, d)
        if x & me:
            flips |= line
    return flips


# ---------------------------------------------------------------- shared interface

cdef inline int num_actions(int game) noexcept nogil:
    if game == TICTACTOE:
        return 9
    elif game == CONNECT4:
        return 7
    return 65


cdef inline int board_height(int game) noexcept nogil:
    if game == TICTACTOE:
        return 3
    elif game == CONNECT4:
        return 6
    return 8


cdef inline int board_width(int game) noexcept nogil:
    if game == TICTACTOE:
        return 3
    elif game == CONNECT4:
        return 7
    return 8


cdef inline void refresh_status(int game, Board* b) noexcept nogil:
    """Derive `terminal` and `outcome` from the stones; the side that just moved is `theirs`."""
    b.terminal = 0
    b.outcome = 0
    cdef int mine_count, their_count
    if game == TICTACTOE:
        if ttt_has_line(b.theirs):
            b.terminal, b.outcome = 1, -1
        elif (b.mine | b.theirs) == 0x1FF:
            b.terminal = 1
    elif game == CONNECT4:
        if c4_has_four(b.theirs):
            b.terminal, b.outcome = 1, -1
        elif popcount64(b.mine | b.theirs) == 42:
            b.terminal = 1
    else:
        if oth_moves(b.mine, b.theirs) == 0 and oth_moves(b.theirs, b.mine) == 0:
            b.terminal = 1
            mine_count = popcount64(b.mine)
            their_count = popcount64(b.theirs)
            b.outcome = (mine_count > their_count) - (mine_count < their_count)


cdef inline void initial_board(int game, Board* b) noexcept nogil:
    b.mine = 0
    b.theirs = 0
    b.ply = 0
    b.to_move = 0
    b.terminal = 0
    b.outcome = 0
    if game == OTHELLO:
        # Black (first player) owns d5 and e4, white owns d4 and e5.
        b.mine = ((<uint64_t>1) << 35) | ((<uint64_t>1) << 28)
        b.theirs = ((<uint64_t>1) << 27) | ((<uint64_t>1) << 36)


cdef inline int legal_actions(int game, const Board* b, int16_t* out) noexcept nogil:
    """Write the legal actions in increasing order; return how many. None when terminal."""
    if b.terminal:
        return 0
    cdef int n = 0, a
    cdef uint64_t free_cells, moves
    if game == TICTACTOE:
        free_cells = ~(b.mine | b.theirs) & 0x1FF
        while free_cells:
            out[n] = <int16_t>lowest_bit(free_cells)
            free_cells &= free_cells - 1
            n += 1
    elif game == CONNECT4:
        free_cells = b.mine | b.theirs
        for a in range(7):
            if (free_cells & c4_top(a)) == 0:
                out[n] = <int16_t>a
                n += 1
    else:
        moves = oth_moves(b.mine, b.theirs)
        if moves == 0:
            out[0] = OTHELLO_PASS
            return 1
        while moves:
            out[n] = <int16_t>lowest_bit(moves)
            moves &= moves - 1
            n += 1
    return n


cdef inline bint is_legal(int game, const Board* b, int action) noexcept nogil:
    if b.terminal or action < 0 or action >= num_actions(game):
        return False
    cdef uint64_t moves
    if game == TICTACTOE:
        return ((b.mine | b.theirs) >> action & 1) == 0
    elif game == CONNECT4:
        return ((b.mine | b.theirs) & c4_top(action)) == 0
    moves = oth_moves(b.mine, b.theirs)
    if action == OTHELLO_PASS:
        return moves == 0
    return (moves >> action) & 1


cdef inline void apply_action(int game, Board* b, int action) noexcept nogil:
    """Play a legal action in place (callers check legality first) and hand over the move."""
    cdef uint64_t placed, flips, all_stones
    if game == TICTACTOE:
        placed = (<uint64_t>1) << action
    elif game == CONNECT4:
        all_stones = b.mine | b.theirs
        placed = (all_stones + c4_bottom(action)) & c4_column(action)
    elif action == OTHELLO_PASS:
        placed = 0
    else:
        placed = (<uint64_t>1) << action
        flips = oth_flips(b.mine, b.theirs, action)
        placed |= flips
        b.theirs &= ~flips
    b.mine, b.theirs = b.theirs, b.mine | placed
    b.ply += 1
    b.to_move ^= 1
    refresh_status(game, b)


cdef inline int cell_bit(int game, int row, int col) noexcept nogil:
    """Bit index of the cell shown at (row, col), row 0 at the top of the printed board."""
    if game == CONNECT4:
        return col * 7 + (5 - row)
    return row * board_width(game) + col


cdef inline void encode_planes(int game, const Board* b, float* out) noexcept nogil:
    """Two planes [mine, theirs] of shape (height, width), row 0 at the top."""
    cdef int h = board_height(game), w = board_width(game)
    cdef int area = h * w, row, col, bit, i
    for row in range(h):
        for col in range(w):
            bit = cell_bit(game, row, col)
            i = row * w + col
            out[i] = <float>((b.mine >> bit) & 1)
            out[area + i] = <float>((b.theirs >> bit) & 1)


cdef inline void decode_planes(int game, const float* planes, Board* b) noexcept nogil:
    """Rebuild a board from its planes (the side to move is implied by them)."""
    cdef int h = board_height(game), w = board_width(game)
    cdef int area = h * w, row, col, bit, i
    b.mine = 0
    b.theirs = 0
    for row in range(h):
        for col in range(w):
            bit = cell_bit(game, row, col)
            i = row * w + col
            if planes[i] > 0.5:
                b.mine |= (<uint64_t>1) << bit
            if planes[area + i] > 0.5:
                b.theirs |= (<uint64_t>1) << bit
    b.ply = <int16_t>popcount64(b.mine | b.theirs)
    if game == OTHELLO:
        b.ply -= 4
    b.to_move = b.ply & 1
    refresh_status(game, b)
