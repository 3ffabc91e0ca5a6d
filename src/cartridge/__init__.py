"""Cartridge: AlphaZero training, tracking and serving for TicTacToe, Connect 4 and Othello."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("cartridge")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"
