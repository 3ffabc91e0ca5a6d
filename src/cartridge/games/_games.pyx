"""Python face of the bitboard engines: one `Game` / `State` interface for every game.

`State.apply` returns a new state and never mutates, so a state can be shared
between a web request, a search root and a replay record without copies going
stale. The search itself works on the C `Board` underneath.
"""

import operator

import numpy as np

from libc.stdint cimport int16_t

from cartridge.games._engine cimport (
    CONNECT4, MAX_ACTIONS, NUM_PLANES, OTHELLO, OTHELLO_PASS, TICTACTOE, Board, apply_action,
    cell_bit, encode_planes, initial_board, is_legal, legal_actions, refresh_status,
)

GAME_NAMES = ("tictactoe", "connect4", "othello")
_GAME_IDS = {"tictactoe": TICTACTOE, "connect4": CONNECT4, "othello": OTHELLO}
_SHAPES = {TICTACTOE: (3, 3, 9, 8, 9), CONNECT4: (6, 7, 7, 2, 42), OTHELLO: (8, 8, 65, 8, 128)}
_PLAYER_MARKS = ("X", "O")
_COLUMN_LETTERS = "abcdefgh"


cdef class Game:
    """Static facts about a game plus move and board text conversion."""

    def __init__(self, name):
        if name not in _GAME_IDS:
            raise ValueError(f"unknown game {name!r}; choose one of {', '.join(GAME_NAMES)}")
        self.name = name
        self.game_id = _GAME_IDS[name]
        (self.height, self.width, self.num_actions,
         self.num_symmetries, self.max_game_length) = _SHAPES[self.game_id]

    def __repr__(self):
        return f"Game({self.name!r})"

    def __reduce__(self):
        return Game, (self.name,)

    @property
    def planes_shape(self):
        """Shape of one network input: (planes, height, width)."""
        return (NUM_PLANES, self.height, self.width)

    def new_initial_state(self):
        cdef Board board
        initial_board(self.game_id, &board)
        return State.wrap(self, board)

    def action_to_string(self, action):
        a = _as_action(action)
        if not 0 <= a < self.num_actions:
            raise ValueError(f"action {action!r} is out of range for {self.name} "
                             f"(0..{self.num_actions - 1})")
        if self.game_id == CONNECT4:
            return str(a + 1)
        if self.game_id == OTHELLO and a == OTHELLO_PASS:
            return "pass"
        return f"{_COLUMN_LETTERS[a % self.width]}{a // self.width + 1}"

    def string_to_action(self, text):
        """Parse a move such as 'b2' (TicTacToe, Othello), '4' (Connect 4) or 'pass' (Othello)."""
        cleaned = str(text).strip().lower()
        if self.game_id == CONNECT4:
            if cleaned.isdigit() and 1 <= int(cleaned) <= 7:
                return int(cleaned) - 1
            raise ValueError(f"malformed connect4 move {text!r}: expected a column 1..7")
        if self.game_id == OTHELLO and cleaned == "pass":
            return OTHELLO_PASS
        letters = _COLUMN_LETTERS[:self.width]
        if (len(cleaned) == 2 and cleaned[0] in letters and cleaned[1].isdigit()
                and 1 <= int(cleaned[1]) <= self.height):
            return (int(cleaned[1]) - 1) * self.width + letters.index(cleaned[0])
        extra = " or 'pass'" if self.game_id == OTHELLO else ""
        raise ValueError(f"malformed {self.name} move {text!r}: expected a cell a1.."
                         f"{letters[-1]}{self.height}{extra}")

    def parse_board(self, text):
        """Rebuild a state from the text `str(state)` prints (coordinate labels optional).

        The side to move comes from an 'X to move' / 'O to move' line; TicTacToe and
        Connect 4 can also infer it from the stone counts, and a finished Othello
        board needs none. Positions that no game can
        reach through counting (wrong counts, floating Connect 4 stones) are refused.
        """
        rows, to_move = _parse_grid(self, text)
        cdef Board board
        require_finished = False
        x_bits, o_bits = 0, 0
        for r, cells in enumerate(rows):
            for c, mark in enumerate(cells):
                bit = cell_bit(self.game_id, r, c)
                if mark == "X":
                    x_bits |= 1 << bit
                elif mark == "O":
                    o_bits |= 1 << bit
        x_count, o_count = bin(x_bits).count("1"), bin(o_bits).count("1")
        if self.game_id != OTHELLO:
            inferred = 0 if x_count == o_count else 1
            if x_count - o_count not in (0, 1):
                raise ValueError(f"impossible {self.name} board: X has {x_count} stones, "
                                 f"O has {o_count} (X moves first)")
            if to_move is not None and to_move != inferred:
                raise ValueError(f"impossible {self.name} board: with {x_count} X and "
                                 f"{o_count} O stones it is {_PLAYER_MARKS[inferred]} to move")
            to_move = inferred
        elif to_move is None:
            to_move = 0  # only acceptable for a finished game, checked below
            require_finished = True
        if self.game_id == CONNECT4:
            _check_gravity(x_bits | o_bits)
        board.mine, board.theirs = (x_bits, o_bits) if to_move == 0 else (o_bits, x_bits)
        board.to_move = to_move
        board.ply = x_count + o_count - (4 if self.game_id == OTHELLO else 0)
        refresh_status(self.game_id, &board)
        if require_finished and not board.terminal:
            raise ValueError("an othello board needs an 'X to move' or 'O to move' line")
        return State.wrap(self, board)

    def apply_symmetry(self, int index, planes, policy):
        """Transform planes [..., C, H, W] and policies [..., A] by symmetry `index`."""
        from cartridge.games.symmetry import apply_symmetry

        return apply_symmetry(self, index, planes, policy)


cdef class State:
    """A position. Immutable from Python: `apply` returns the successor."""

    @staticmethod
    cdef State wrap(Game game, Board board):
        cdef State state = State.__new__(State)
        state.game = game
        state.board = board
        return state

    def __reduce__(self):
        return _rebuild_state, (self.game.name, self.board.mine, self.board.theirs,
                                self.board.ply, self.board.to_move)

    @property
    def current_player(self):
        """0 for the first player (X, black in Othello), 1 for the second."""
        return self.board.to_move

    @property
    def ply(self):
        return self.board.ply

    def is_terminal(self):
        return bool(self.board.terminal)

    def legal_actions(self):
        cdef int16_t actions[MAX_ACTIONS]
        cdef int n = legal_actions(self.game.game_id, &self.board, actions)
        return [actions[i] for i in range(n)]

    def legal_mask(self):
        mask = np.zeros(self.game.num_actions, dtype=bool)
        mask[self.legal_actions()] = True
        return mask

    def apply(self, action):
        """Return the state after `action`; ValueError naming the legal actions otherwise."""
        a = _as_action(action)
        if not is_legal(self.game.game_id, &self.board, a):
            if self.board.terminal:
                raise ValueError(f"illegal action {action!r}: the {self.game.name} game is over")
            raise ValueError(f"illegal action {action!r} for {self.game.name}; "
                             f"legal actions: {self.legal_actions()}")
        cdef Board next_board = self.board
        apply_action(self.game.game_id, &next_board, a)
        return State.wrap(self.game, next_board)

    def returns(self):
        """Final score per player, (first, second): +1 win, 0 draw, -1 loss; zeros mid-game."""
        if not self.board.terminal:
            return (0.0, 0.0)
        mover = float(self.board.outcome)
        return (mover, -mover) if self.board.to_move == 0 else (-mover, mover)

    def result(self, int player):
        """Final score from `player`'s view; ValueError while the game is still going."""
        if player not in (0, 1):
            raise ValueError(f"player must be 0 or 1, got {player}")
        if not self.board.terminal:
            raise ValueError("the game is not over yet")
        return self.returns()[player]

    def planes(self):
        """Network input from the side to move: float32 [2, H, W] = [mine, theirs]."""
        out = np.empty(self.game.planes_shape, dtype=np.float32)
        cdef float[:, :, ::1] view = out
        encode_planes(self.game.game_id, &self.board, &view[0, 0, 0])
        return out

    def stones(self, int player):
        """Board cells owned by `player` as a bool [H, W] array, row 0 at the top."""
        planes = self.planes()
        return planes[0 if player == self.board.to_move else 1].astype(bool)

    def __eq__(self, other):
        if not isinstance(other, State):
            return NotImplemented
        cdef State o = other
        return (self.game.game_id == o.game.game_id and self.board.mine == o.board.mine
                and self.board.theirs == o.board.theirs and self.board.to_move == o.board.to_move)

    def __hash__(self):
        return hash((self.game.game_id, self.board.mine, self.board.theirs, self.board.to_move))

    def __repr__(self):
        return f"<{self.game.name} state ply={self.board.ply}>\n{self}"

    def __str__(self):
        game = self.game
        x_stones, o_stones = self.stones(0), self.stones(1)
        lines = []
        square = game.game_id != CONNECT4
        if square:
            lines.append("  " + " ".join(_COLUMN_LETTERS[:game.width]))
        for r in range(game.height):
            cells = ["X" if x_stones[r, c] else "O" if o_stones[r, c] else "."
                     for c in range(game.width)]
            lines.append((f"{r + 1} " if square else "") + " ".join(cells))
        if not square:
            lines.append(" ".join(str(c + 1) for c in range(game.width)))
        if self.board.terminal:
            first = self.returns()[0]
            lines.append("draw" if first == 0 else f"{_PLAYER_MARKS[0 if first > 0 else 1]} wins")
        else:
            lines.append(f"{_PLAYER_MARKS[self.board.to_move]} to move")
        return "\n".join(lines)


def _rebuild_state(name, mine, theirs, ply, to_move):
    cdef Game game = Game(name)
    cdef Board board
    board.mine, board.theirs, board.ply, board.to_move = mine, theirs, ply, to_move
    refresh_status(game.game_id, &board)
    return State.wrap(game, board)


def _as_action(action):
    if isinstance(action, (bool, np.bool_)):
        raise ValueError(f"malformed action {action!r}: expected an integer action index")
    try:
        return operator.index(action)
    except TypeError:
        raise ValueError(f"malformed action {action!r}: expected an integer action index") from None


def _parse_grid(Game game, text):
    rows, to_move = [], None
    for raw in str(text).splitlines():
        tokens = raw.split()
        if not tokens:
            continue
        lowered = raw.strip().lower()
        if lowered in ("x to move", "o to move"):
            to_move = 0 if lowered[0] == "x" else 1
            continue
        if len(tokens) == game.width + 1 and tokens[0].isdigit():
            tokens = tokens[1:]
        if len(tokens) == game.width and all(t.upper() in ("X", "O", ".") for t in tokens):
            rows.append([t.upper() for t in tokens])
    if len(rows) != game.height:
        raise ValueError(f"malformed {game.name} board: expected {game.height} rows of "
                         f"{game.width} cells (X, O or .), found {len(rows)}")
    return rows, to_move


def _check_gravity(stones):
    for column in range(7):
        bits = (stones >> (column * 7)) & 0x3F
        if bits & (bits + 1):
            raise ValueError(f"impossible connect4 board: column {column + 1} has a stone "
                             "floating above an empty cell")


cdef unsigned long long _perft(int game, const Board* board, int depth) noexcept nogil:
    if depth == 0:
        return 1
    if board.terminal:
        return 0
    cdef int16_t actions[MAX_ACTIONS]
    cdef int n = legal_actions(game, board, actions), k
    cdef unsigned long long total = 0
    cdef Board child
    for k in range(n):
        child = board[0]
        apply_action(game, &child, actions[k])
        total += _perft(game, &child, depth - 1)
    return total


def perft(State state, int depth):
    """Positions reached after exactly `depth` plies from `state`; finished games stop early."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    cdef unsigned long long count
    with nogil:
        count = _perft(state.game.game_id, &state.board, depth)
    return count
