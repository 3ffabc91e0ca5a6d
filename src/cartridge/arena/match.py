"""Matches between two players: seats alternate and openings are shared by each pair."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cartridge.arena.players import Player
from cartridge.arena.stats import MatchResult, summarize
from cartridge.games import Game, State, describe


def random_openings(game: Game, count: int, plies: int, seed: int) -> list[State]:
    """`count` start positions after `plies` random moves (never a finished game)."""
    rng = np.random.default_rng(seed)
    openings = []
    while len(openings) < count:
        state = game.new_initial_state()
        for _ in range(plies):
            state = state.apply(int(rng.choice(state.legal_actions())))
            if state.is_terminal():
                break
        if not state.is_terminal():
            openings.append(state)
    return openings


def play_match(
    game: Game,
    player1: Player,
    player2: Player,
    games: int,
    *,
    opening_plies: int | None = None,
    seed: int = 0,
    on_game_end: Callable[[int], None] | None = None,
) -> MatchResult:
    """Play `games` games, all at once; game k starts from opening k // 2 with
    player1 moving first when k is even, so each opening is played from both seats."""
    if games < 1:
        raise ValueError(f"games must be at least 1, got {games}")
    plies = describe(game.name).arena_opening_plies if opening_plies is None else opening_plies
    openings = random_openings(game, (games + 1) // 2, plies, seed)
    states = [openings[k // 2] for k in range(games)]
    # Seat of player1 in game k: which player owns the first move of the opening.
    player1_seat = [(states[k].current_player + (k % 2)) % 2 for k in range(games)]
    wins = losses = draws = finished = 0
    running = list(range(games))
    while running:
        for player, seat_of_player1 in ((player1, True), (player2, False)):
            to_move = [
                k
                for k in running
                if not states[k].is_terminal()
                and (states[k].current_player == player1_seat[k]) == seat_of_player1
            ]
            if not to_move:
                continue
            for k, action in zip(to_move, player.choose([states[k] for k in to_move]), strict=True):
                states[k] = states[k].apply(action)
        still_running = []
        for k in running:
            if not states[k].is_terminal():
                still_running.append(k)
                continue
            result = states[k].result(player1_seat[k])
            wins, losses, draws = wins + (result > 0), losses + (result < 0), draws + (result == 0)
            finished += 1
            if on_game_end:
                on_game_end(finished)
        running = still_running
    return summarize(player1.name, player2.name, game.name, wins, losses, draws)
