"""Training checkpoints on a local directory or an S3 prefix.

A checkpoint holds everything needed to continue bit for bit: model, optimizer
and scheduler state, the step, every random generator the loop draws from, the
config and the MLflow run it logs to. It is written to a temporary name and
then moved (or uploaded) in one piece, so a kill mid-write leaves the previous
checkpoint intact.
"""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path

import torch

from cartridge import storage

LATEST = "latest.pt"


def checkpoint_location(directory: str) -> str:
    return storage.join(directory, LATEST)


def exists(directory: str) -> bool:
    location = checkpoint_location(directory)
    if storage.is_s3(location):
        return location in storage.list_keys(directory)
    return Path(location).is_file()


def save(directory: str, payload: dict) -> str:
    location = checkpoint_location(directory)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    if storage.is_s3(location):
        with tempfile.NamedTemporaryFile(suffix=".pt") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            storage.upload_file(handle.name, location)  # S3 PUTs are atomic per object
        return location
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, path)
    return location


def load(location: str) -> dict:
    """A checkpoint file (local or s3://), on the CPU."""
    if storage.is_s3(location):
        with tempfile.TemporaryDirectory() as workdir:
            local = storage.download_file(location, Path(workdir) / LATEST)
            return torch.load(local, map_location="cpu", weights_only=True)
    if not Path(location).is_file():
        raise FileNotFoundError(f"checkpoint {location} does not exist")
    return torch.load(location, map_location="cpu", weights_only=True)
