"""What things are called across MLflow, the model registry and Triton, in one place.

Registry conventions for `cartridge-<game>`: alias `challenger` is the newest trained
version, `champion` the one being served, `previous` the champion before it (the
rollback target). Triton serves the champion as `cartridge_<game>` (Triton model names
are directory names, so no dash). Nothing here imports a client library: the web app,
the pipeline shell and the trainer all read these.
"""

from __future__ import annotations

CHALLENGER = "challenger"
CHAMPION = "champion"
PREVIOUS = "previous"


def registered_model_name(game_name: str) -> str:
    return f"cartridge-{game_name}"


def experiment_name(game_name: str) -> str:
    return f"cartridge-{game_name}"


def triton_model_name(game_name: str) -> str:
    return f"cartridge_{game_name}"


def version_uri(game_name: str, version: str | None) -> str:
    """`models:/cartridge-<game>/<version>`; '' for no version (no champion yet)."""
    return f"models:/{registered_model_name(game_name)}/{version}" if version else ""


def alias_uri(game_name: str, alias: str) -> str:
    return f"models:/{registered_model_name(game_name)}@{alias}"


def version_of(uri: str) -> str | None:
    """The version a `models:/name/N` URI names; None for ''."""
    return str(uri).rsplit("/", 1)[-1] if uri else None
