from cartridge.games._engine cimport Board


cdef class Game:
    cdef readonly int game_id
    cdef readonly str name
    cdef readonly int num_actions
    cdef readonly int height
    cdef readonly int width
    cdef readonly int num_symmetries
    cdef readonly int max_game_length


cdef class State:
    cdef Board board
    cdef readonly Game game

    @staticmethod
    cdef State wrap(Game game, Board board)
