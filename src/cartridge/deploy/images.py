"""The images a release ships, and the references a pipeline may run on.

Two images carry the package: `cartridge` (CPU torch: self-play, arena, the web API,
MLflow, the reconciler) and `cartridge-train` (the same recipe on PyTorch's CUDA
wheels) for the training step, which requests a GPU. Both are tagged with the package
version; a release compiles its pipeline against their digests.
"""

from __future__ import annotations

import re

from cartridge import __version__

REGISTRY = "ghcr.io/cartridge-ml"
PIPELINE_IMAGE_NAME = "cartridge"
TRAINING_IMAGE_NAME = "cartridge-train"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def release_image(name: str, version: str = __version__) -> str:
    return f"{REGISTRY}/{name}:{version}"


PIPELINE_IMAGE = release_image(PIPELINE_IMAGE_NAME)
TRAINING_IMAGE = release_image(TRAINING_IMAGE_NAME)


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """(repository, tag, digest) of an image reference; a port in the registry host
    (`localhost:5001/cartridge:dev`) is not a tag."""
    rest, _, digest = reference.partition("@")
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        return rest[:colon], rest[colon + 1 :], digest or None
    return rest, None, digest or None


def check_image(reference: str, what: str = "image") -> str:
    """`reference` if it pins what runs (a tag other than `latest`, or a digest);
    ValueError naming the problem otherwise. A step on a moving tag runs whatever was
    pushed last, so two runs of one pipeline version could run different code."""
    if not reference or reference != reference.strip() or " " in reference:
        raise ValueError(f"{what} {reference!r} is not an image reference")
    repository, tag, digest = split_reference(reference)
    if not repository or repository.endswith("/"):
        raise ValueError(f"{what} {reference!r} names no repository")
    if digest is not None and not _DIGEST.match(digest):
        raise ValueError(f"{what} {reference!r}: a digest is sha256: and 64 hex digits")
    if tag is not None and not _TAG.match(tag):
        raise ValueError(f"{what} {reference!r}: {tag!r} is not a valid tag")
    if digest is None and tag in (None, "latest"):
        raise ValueError(
            f"{what} {reference!r} does not pin what runs: give a version tag or a digest "
            f"(e.g. {release_image(repository.rsplit('/', 1)[-1])})"
        )
    return reference
