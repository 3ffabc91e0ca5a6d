"""Builds the Cython extensions; everything else lives in pyproject.toml."""

import platform

from Cython.Build import cythonize
from setuptools import Extension, setup

# x86-64-v2 gives the POPCNT instruction the bitboard engines lean on; other
# architectures get their native popcount from -O3 alone.
COMPILE_ARGS = ["-O3"] + (["-march=x86-64-v2"] if platform.machine() == "x86_64" else [])

EXTENSIONS = [
    Extension(name, [path], extra_compile_args=COMPILE_ARGS)
    for name, path in [
        ("cartridge.games._games", "src/cartridge/games/_games.pyx"),
        ("cartridge.mcts._search", "src/cartridge/mcts/_search.pyx"),
        ("cartridge.evaluators._rollout", "src/cartridge/evaluators/_rollout.pyx"),
    ]
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        include_path=["src"],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
