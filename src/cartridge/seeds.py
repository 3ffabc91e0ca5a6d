"""Seeds for the pipeline's random work, derived from the user's seed and the run.

A recurring run keeps its parameters, `seed` included, from one run to the next. Seeds
made from `seed` alone would have every scheduled run replay the same self-play games
while the champion is unchanged, adding copies to the replay window instead of new
positions. Mixing in the KFP run id gives each run its own games; a run started without
one (`run_id=""`, what local runs pass) is reproducible from `seed` alone.
"""

from __future__ import annotations

import hashlib

SEED_BITS = 63  # non-negative as a signed 64-bit integer, which every consumer accepts


def derive_seed(seed: int, run_id: str, purpose: str, *indices: int) -> int:
    """A seed for one piece of work (`purpose` and its `indices`, e.g. "selfplay",
    iteration, shard). Distinct inputs give unrelated seeds: unlike arithmetic such as
    `seed * 1000 + iteration * 100 + shard`, no two shards, iterations or runs can
    collide."""
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    material = "\x1f".join([str(seed), run_id, purpose, *map(str, indices)])
    digest = hashlib.blake2b(material.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - SEED_BITS)
