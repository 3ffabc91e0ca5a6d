"""Board symmetries as index permutations, shared by planes and policy vectors.

Each symmetry is a map sigma from a cell (or action) to where it lands. A
transformed array is `x[..., perm]` with `perm = argsort(sigma)`, so the same
fancy index works for a batch of planes and for a batch of policies, and the
transformed planes are exactly those of the position reached by playing the
transformed moves (the property the tests check).
"""

from functools import cache

import numpy as np


def _dihedral_maps(size: int) -> list[np.ndarray]:
    rows, cols = np.divmod(np.arange(size * size), size)
    last = size - 1
    images = [
        (rows, cols),
        (cols, last - rows),
        (last - rows, last - cols),
        (last - cols, rows),
        (rows, last - cols),
        (last - rows, cols),
        (cols, rows),
        (last - cols, last - rows),
    ]
    return [r * size + c for r, c in images]


def permutations(game) -> tuple[np.ndarray, np.ndarray]:
    """(cell_perms [S, H*W], action_perms [S, A]): gather indices for every symmetry,
    for code that transforms whole batches itself (the trainer, on its device)."""
    return _permutations(game.name)


@cache
def _permutations(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(cell_perms [S, H*W], action_perms [S, A]) for the game called `name`."""
    if name == "connect4":
        rows, cols = np.divmod(np.arange(42), 7)
        cell_maps = [rows * 7 + cols, rows * 7 + (6 - cols)]
        action_maps = [np.arange(7), 6 - np.arange(7)]
    else:
        size = 3 if name == "tictactoe" else 8
        cell_maps = _dihedral_maps(size)
        if name == "othello":
            action_maps = [np.append(m, 64) for m in cell_maps]  # a pass stays a pass
        else:
            action_maps = cell_maps
    cell_perms = np.stack([np.argsort(m) for m in cell_maps])
    action_perms = np.stack([np.argsort(m) for m in action_maps])
    return cell_perms, action_perms


def action_map(game, index: int) -> np.ndarray:
    """Where each action lands under symmetry `index` (sigma itself, for moves)."""
    _check_index(game, index)
    return np.argsort(_permutations(game.name)[1][index])


def inverse(game, index: int) -> int:
    """The symmetry that undoes `index`."""
    _check_index(game, index)
    perms = _permutations(game.name)[1]
    identity = np.arange(perms.shape[1])
    for candidate in range(len(perms)):
        if np.array_equal(perms[index][perms[candidate]], identity):
            return candidate
    raise AssertionError("symmetry group is not closed")


def apply_symmetry(game, index: int, planes: np.ndarray, policy: np.ndarray):
    """Transform planes [..., C, H, W] and policies [..., A] by symmetry `index`."""
    _check_index(game, index)
    planes = np.asarray(planes)
    policy = np.asarray(policy)
    if planes.shape[-3:] != game.planes_shape:
        raise ValueError(f"planes of shape {planes.shape} do not end in {game.planes_shape}")
    if policy.shape[-1] != game.num_actions:
        raise ValueError(f"policy of shape {policy.shape} does not end in {game.num_actions}")
    cell_perms, action_perms = _permutations(game.name)
    flat = planes.reshape(*planes.shape[:-2], game.height * game.width)
    return (
        flat[..., cell_perms[index]].reshape(planes.shape),
        policy[..., action_perms[index]],
    )


def _check_index(game, index: int) -> None:
    if not 0 <= index < game.num_symmetries:
        raise ValueError(f"{game.name} has symmetries 0..{game.num_symmetries - 1}, got {index}")
