"""A pipeline run's progress as people want to see it, read back from MLflow."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from rich.console import Console

from cartridge.names import experiment_name, registered_model_name


class PipelineProgress:
    """Prints what changed in MLflow since the last poll: each iteration's training
    step and loss, each arena verdict. A pipeline run's concise progress, read from
    where its steps write, while kfp.local's own log goes to a file."""

    def __init__(
        self,
        client: MlflowClient,
        game: str,
        since_ms: int,
        steps: int,
        console: Console | None = None,
    ):
        self.client, self.game, self.since_ms, self.steps = client, game, since_ms, steps
        self.console = console or Console(stderr=True, highlight=False)
        self.seen: dict[str, str] = {}

    def poll(self, console: Console | None = None) -> None:
        """Print what changed, on `console` (default: the one given at creation)."""
        console = console or self.console
        experiment = self.client.get_experiment_by_name(experiment_name(self.game))
        if experiment is None:
            return
        runs = self.client.search_runs(
            [experiment.experiment_id],
            f"attributes.start_time >= {self.since_ms}",
            order_by=["attributes.start_time ASC"],
        )
        for run in runs:
            if run.data.tags.get("kind") == "pipeline":
                continue
            iteration = run.data.tags.get("iteration", "?")
            history = self.client.get_metric_history(run.info.run_id, "loss")
            step = max((m.step for m in history), default=0)
            loss = run.data.metrics.get("loss")
            state = f"{run.info.status}:{step}"
            if self.seen.get(run.info.run_id) != state:
                self.seen[run.info.run_id] = state
                loss_text = f", loss {loss:.3f}" if loss is not None else ""
                console.print(
                    f"  iteration {iteration}: training step {step}/{self.steps}"
                    f"{loss_text} ({run.info.status.lower()})"
                )
        name = registered_model_name(self.game)
        try:
            versions = self.client.search_model_versions(f"name='{name}'")
        except MlflowException:
            return
        for version in versions:
            gate = version.tags.get("gate")
            key = f"gate:{version.version}"
            if gate and int(version.creation_timestamp) >= self.since_ms and key not in self.seen:
                self.seen[key] = gate
                console.print(
                    f"  arena v{version.version} vs {version.tags.get('arena_opponent')}"
                    f": {version.tags.get('arena_wins')}W {version.tags.get('arena_draws')}D"
                    f" {version.tags.get('arena_losses')}L; {gate}"
                )
