"""Prometheus metrics of the web app, in a registry of its own so several apps (tests,
workers) never collide in the global one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
TRITON_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5)


class WebMetrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cartridge_http_requests",
            "HTTP requests by route, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "cartridge_http_request_duration_seconds",
            "Time to answer an HTTP request, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.triton_latency = Histogram(
            "cartridge_triton_request_duration_seconds",
            "Round trip of one inference call to Triton, by game.",
            ["game"],
            buckets=TRITON_BUCKETS,
            registry=self.registry,
        )
        self.positions = Counter(
            "cartridge_triton_positions",
            "Positions evaluated through Triton, by game.",
            ["game"],
            registry=self.registry,
        )
        self.errors = Counter(
            "cartridge_errors",
            "Requests that failed, by kind (bad_request, triton_unavailable, "
            "mlflow_unavailable, no_champion, bad_signature, overloaded, internal).",
            ["kind"],
            registry=self.registry,
        )
        self.pending_moves = Gauge(
            "cartridge_pending_moves",
            "Moves being searched or waiting for a worker thread.",
            registry=self.registry,
        )
        self.serving_in_sync = Gauge(
            "cartridge_serving_in_sync",
            "1 when Triton serves the registry's champion for the game, after the latest "
            "reconcile pass (0: not yet, refused, or a server did not answer).",
            ["game"],
            registry=self.registry,
        )
        self.champion_version = Gauge(
            "cartridge_champion_version",
            "The registry's champion version for the game (0: none), as the latest "
            "reconcile pass read it; a promotion changes it.",
            ["game"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "cartridge_webhook_deliveries",
            "MLflow webhook deliveries accepted, by the game they concern ('' for none).",
            ["game"],
            registry=self.registry,
        )

    def record_serving(self, outcomes) -> None:
        """Each game's latest reconcile outcome (`GameServing`) as gauges."""
        for outcome in outcomes:
            self.serving_in_sync.labels(outcome.game).set(1 if outcome.in_sync else 0)
            champion = int(outcome.champion) if outcome.champion else 0
            self.champion_version.labels(outcome.game).set(champion)
