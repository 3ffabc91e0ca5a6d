"""Pipeline steps' figures for Prometheus, pushed to a Pushgateway.

Steps are batch jobs that end before any scrape could find them, so, as Prometheus
recommends for batch jobs, each pushes its figures when it is done; Prometheus scrapes
the gateway (`honorLabels`, so `game` and `shard` stay as pushed). Each push replaces
its group (job `cartridge-pipeline`, the game, and the shard for self-play), so the
series hold the latest iteration's values. Pushing is best effort: a gateway that is
away costs a warning, never a step. The gateway is the run's `pushgateway_url`
parameter ('' : nothing is pushed).
"""

from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

log = logging.getLogger(__name__)

JOB = "cartridge-pipeline"
PUSH_TIMEOUT_SECONDS = 5.0
# What each push may carry: name -> help. A value not listed here is a programming error.
SERIES = {
    "cartridge_selfplay_positions_per_second": "Positions a self-play shard produced per second.",
    "cartridge_selfplay_positions": "Positions in the latest self-play shard.",
    "cartridge_selfplay_games": "Games in the latest self-play shard.",
    "cartridge_pipeline_iteration": "The latest reported iteration of the game's pipeline run.",
    "cartridge_pipeline_train_loss": "Final total loss of the latest training step.",
    "cartridge_pipeline_train_policy_loss": "Final policy loss of the latest training step.",
    "cartridge_pipeline_train_value_loss": "Final value loss of the latest training step.",
    "cartridge_pipeline_train_samples_per_second": "Training samples per second at the end.",
    "cartridge_pipeline_arena_score": "The latest challenger's arena score (0-1).",
    "cartridge_pipeline_promoted": "1 when the latest challenger became champion, else 0.",
    "cartridge_pipeline_iterations_since_promotion": "Challengers trained since the champion.",
    "cartridge_pipeline_last_success_timestamp_seconds": "When the last report was pushed.",
}


def registry_for(values: dict[str, float]) -> CollectorRegistry:
    registry = CollectorRegistry()
    for name, value in values.items():
        Gauge(name, SERIES[name], registry=registry).set(value)
    return registry


def push(gateway: str, game_name: str, values: dict[str, float], **grouping: str) -> bool:
    """Push `values` for `game_name` (and any further grouping labels); whether it went."""
    if not gateway:
        return False
    try:
        push_to_gateway(
            gateway,
            job=JOB,
            registry=registry_for(values),
            grouping_key={"game": game_name, **grouping},
            timeout=PUSH_TIMEOUT_SECONDS,
        )
    except OSError as error:  # URLError, refused, timed out, HTTP errors
        log.warning("metrics not pushed to %s: %s", gateway, error)
        return False
    return True
