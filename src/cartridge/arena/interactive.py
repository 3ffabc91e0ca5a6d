"""A person against a player, on a text board: `cartridge play`."""

from __future__ import annotations

from collections.abc import Callable

from cartridge.arena.players import Player
from cartridge.games import Game


def play_against(
    game: Game, bot: Player, human_seat: int, ask: Callable[[str], str], show: Callable[[str], None]
) -> float:
    """Alternate the person's moves (read with `ask`, e.g. 'b2' or '4') and the bot's.
    A bad move is explained and asked again. Returns the person's result."""
    state = game.new_initial_state()
    while not state.is_terminal():
        show(str(state))
        if state.current_player == human_seat:
            legal = ", ".join(game.action_to_string(a) for a in state.legal_actions())
            answer = ask(f"your move ({legal})")
            try:
                state = state.apply(game.string_to_action(answer))
            except ValueError as error:
                show(f"  {error}")
            continue
        action = bot.choose([state])[0]
        show(f"{bot.name} plays {game.action_to_string(action)}")
        state = state.apply(action)
    show(str(state))
    return state.result(human_seat)
