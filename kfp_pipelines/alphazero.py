"""The AlphaZero loop as a Kubeflow pipeline.

Per iteration: plan -> self-play shards in a `ParallelFor` -> train (GPU, spot-tolerant,
retried) on the game's replay window (the last K iterations, across runs) -> arena against the
champion -> promote under `dsl.If` when the gate passes (`dsl.Else`: keep the champion).
The next iteration's champion is `dsl.OneOf` the two branches' outputs, so it starts only
after the promotion settled and plays the right network. After the last iteration a
retention step deletes what the game no longer needs (`cartridge.retention`). An
`ExitHandler` closes the pipeline's MLflow run, as FAILED when any step failed.

The champion reaches the self-play tasks inside the loop items (`plan` builds them)
rather than as a separate input: kfp.local (2.17) hands a task output given to a
`ParallelFor` body the loop item instead.

Iterations are unrolled when the pipeline is compiled (`iterations` is a compile-time
setting): one run then shows the whole loop in the KFP UI, every step keeps its own
retries, caching and logs, and a failure anywhere stops the run before a later
iteration can promote from it. A driver chaining one-iteration runs would spread one
training job over many runs and lose that single view.

The run's parameters are the fields of the settings groups in `cartridge.settings`
(their pipeline names and defaults come from there, never restated here); each step
receives its group as one struct and the endpoints as another, and the library
validates them.

Components are lightweight Python functions that import `cartridge` inside their body
and run from an image holding kfp and the package (`install_kfp_package=False`), so
nothing is installed at run time: the CPU image for every step but training, which runs
on the CUDA image and requests a GPU (`cartridge.deploy.images`). Every step has a
deadline (the pod's activeDeadlineSeconds), so a hung call cannot hold a run forever.
(No `from __future__ import annotations` here: KFP reads the component signatures'
annotations as real types.)
"""

import inspect

from kfp import dsl, kubernetes

from cartridge.deploy.images import PIPELINE_IMAGE, TRAINING_IMAGE, check_image
from cartridge.settings import SETTING_GROUPS, Endpoints

CREDENTIALS_SECRET = "cartridge-s3"  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the cluster

# Each step's deadline in seconds: about 100x (or more) the time measured at the default
# settings on 2 CPU cores (docs/DEPLOY.md: Connect 4 self-play 31-56 s a shard, CPU
# training 134 s for 500 steps, arena 33 s, the bookkeeping steps 2-4 s). That leaves
# room for settings an order of magnitude heavier on a slow node; it stops what hangs.
STEP_TIMEOUTS = {
    "begin": 10 * 60,
    "plan": 10 * 60,
    "selfplay": 2 * 3600,
    "train": 4 * 3600,
    "arena": 2 * 3600,
    "promote": 15 * 60,
    "keep": 10 * 60,
    "gc": 30 * 60,
    "report": 10 * 60,
    "finish": 10 * 60,
}


def build_components(image: str = PIPELINE_IMAGE, training_image: str = TRAINING_IMAGE) -> dict:
    """The components: training on `training_image`, the rest on `image`. Each is a
    shell around one `cartridge.loop` step."""

    def component(function, base_image: str = image):
        return dsl.component(function, base_image=base_image, install_kfp_package=False)

    @component
    def begin(
        game: str,
        pipeline_run_id: str,
        iterations: int,
        selfplay: dict,
        training: dict,
        gate: dict,
        retention: dict,
        endpoints: dict,
    ) -> str:
        from cartridge import loop
        from cartridge.settings import Endpoints

        return loop.begin_pipeline_run(
            game,
            pipeline_run_id,
            {"iterations": iterations, **selfplay, **training, **gate, **retention},
            endpoints=Endpoints.from_parameters(endpoints),
        )

    @component
    def plan(game: str, champion: str, shards: list, endpoints: dict) -> list:
        from cartridge import loop
        from cartridge.settings import Endpoints

        return loop.plan_selfplay(
            game, champion, shards, endpoints=Endpoints.from_parameters(endpoints)
        )

    @component
    def selfplay(
        game: str,
        iteration: int,
        shard: int,
        champion: str,
        settings: dict,
        endpoints: dict,
        pipeline_run_id: str,
        seed: int,
        seed_with_run_id: bool,
    ) -> str:
        from cartridge import loop
        from cartridge.settings import Endpoints, SelfPlaySettings

        return loop.selfplay_step(
            game,
            iteration,
            shard,
            champion,
            settings=SelfPlaySettings.from_parameters(settings),
            endpoints=Endpoints.from_parameters(endpoints),
            pipeline_run_id=pipeline_run_id,
            seed=seed,
            seed_with_run_id=seed_with_run_id,
        )

    def train(
        game: str,
        iteration: int,
        shards: list,
        champion: str,
        settings: dict,
        endpoints: dict,
        pipeline_run_id: str,
        parent_run_id: str,
        seed: int,
        seed_with_run_id: bool,
        device: str,
    ) -> str:
        from cartridge import loop
        from cartridge.settings import Endpoints, TrainingSettings

        print(f"iteration {iteration}: {len(shards)} new shards; champion {champion or '-'}")
        return loop.train_step(
            game,
            iteration,
            champion,
            settings=TrainingSettings.from_parameters(settings),
            endpoints=Endpoints.from_parameters(endpoints),
            pipeline_run_id=pipeline_run_id,
            parent_run_id=parent_run_id,
            seed=seed,
            seed_with_run_id=seed_with_run_id,
            device=device,
        )

    @component
    def arena(game: str, challenger: str, settings: dict, endpoints: dict, seed: int) -> bool:
        from cartridge import loop
        from cartridge.settings import Endpoints, GateSettings

        print(f"challenger {challenger}")
        return loop.arena_step(
            game,
            challenger,
            settings=GateSettings.from_parameters(settings),
            endpoints=Endpoints.from_parameters(endpoints),
            seed=seed,
        )

    @component
    def promote(game: str, challenger: str, endpoints: dict) -> str:
        from cartridge import loop
        from cartridge.settings import Endpoints

        return loop.promote_step(game, challenger, endpoints=Endpoints.from_parameters(endpoints))

    @component
    def keep(game: str, endpoints: dict) -> str:
        from cartridge import loop
        from cartridge.settings import Endpoints

        return loop.keep_step(game, endpoints=Endpoints.from_parameters(endpoints))

    @component
    def report(
        game: str,
        iteration: int,
        challenger: str,
        champion: str,
        endpoints: dict,
        pipeline_run_id: str,
        metrics: dsl.Output[dsl.Metrics],
        summary: dsl.Output[dsl.Markdown],
        model: dsl.Output[dsl.Model],
    ):
        from cartridge import loop
        from cartridge.settings import Endpoints

        outcome = loop.iteration_report(
            game,
            iteration,
            challenger,
            champion,
            endpoints=Endpoints.from_parameters(endpoints),
            pipeline_run_id=pipeline_run_id,
        )
        for name, value in outcome.metrics.items():
            metrics.log_metric(name, value)
        with open(summary.path, "w") as handle:
            handle.write(outcome.markdown)
        # The weights stay in the registry: the artifact says where (its URI in the
        # pipeline root is KFP's own, so the launcher can store it like any other).
        model.metadata.update({"model_uri": outcome.model_uri, **outcome.model_metadata})
        with open(model.path, "w") as handle:
            handle.write(outcome.model_uri + "\n")

    @component
    def gc(game: str, settings: dict, endpoints: dict) -> str:
        from cartridge import loop
        from cartridge.settings import Endpoints, RetentionSettings

        return loop.gc_step(
            game,
            settings=RetentionSettings.from_parameters(settings),
            endpoints=Endpoints.from_parameters(endpoints),
        )

    @component
    def finish(
        game: str, pipeline_run_id: str, endpoints: dict, status: dsl.PipelineTaskFinalStatus
    ):
        from cartridge import loop
        from cartridge.settings import Endpoints

        loop.finish_pipeline_run(
            game,
            pipeline_run_id,
            status.state == "SUCCEEDED",
            status.error_message or "",
            endpoints=Endpoints.from_parameters(endpoints),
        )

    return {
        "begin": begin,
        "plan": plan,
        "selfplay": selfplay,
        "train": component(train, training_image),
        "arena": arena,
        "promote": promote,
        "keep": keep,
        "report": report,
        "gc": gc,
        "finish": finish,
    }


def _step(task):
    """A task as every step needs it: S3 keys from a Kubernetes secret on a cluster
    (locally the environment has them), its step's deadline, and JSON log lines with
    the step's game, run and iteration (`cartridge.logs`)."""
    kubernetes.set_timeout(task, STEP_TIMEOUTS[task.component_spec.name])
    task.set_env_variable("CARTRIDGE_LOG_JSON", "true")
    return kubernetes.use_secret_as_env(
        task,
        secret_name=CREDENTIALS_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )


def _on_gpu_nodes(task, gpus: int) -> None:
    """The training step's GPU request, on the GPU pool, spot nodes allowed (it resumes
    from its checkpoint when preempted)."""
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    kubernetes.add_toleration(
        task, key="cloud.google.com/gke-spot", operator="Equal", value="true", effect="NoSchedule"
    )
    kubernetes.add_node_selector(task, label_key="cartridge/pool", label_value="gpu")


# The run's own parameters, before the settings groups' and the endpoints'.
RUN_PARAMETERS = (
    ("game", str, "tictactoe"),
    ("shards", list, [0, 1]),  # the shard ids of each iteration's fan-out
    ("seed", int, 0),
    # Mix the KFP run id into the seeds, so recurring runs play new games (off: the
    # same seed replays the same games, as local runs do).
    ("seed_with_run_id", bool, True),
)
GROUPS = {**SETTING_GROUPS, "endpoints": Endpoints}


def pipeline_parameters() -> list[tuple[str, type, object]]:
    """(name, type, default) of every run parameter, in the run form's order."""
    derived = [
        (name, model.parameter_type(name), field.default)
        for model in GROUPS.values()
        for name, field in model.parameter_fields().items()
    ]
    return [*RUN_PARAMETERS, *derived]


def build_pipeline(
    iterations: int = 2,
    image: str = PIPELINE_IMAGE,
    training_image: str = TRAINING_IMAGE,
    training_gpus: int = 1,
    parallelism: int = 4,
):
    """The pipeline function with `iterations` unrolled iterations. Training requests
    `training_gpus` GPUs and insists on CUDA; with 0 it requests none and trains on
    the CPU (kfp.local, or a cluster without GPUs)."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    if training_gpus < 0:
        raise ValueError(f"training_gpus must be 0 or more, got {training_gpus}")
    ops = build_components(check_image(image), check_image(training_image, "training image"))
    parameters = pipeline_parameters()

    def alphazero(*values):
        # KFP calls the pipeline function with one channel per parameter, in order.
        run = dict(zip([name for name, _, _ in parameters], values, strict=True))
        game, seed, fresh_seeds = run["game"], run["seed"], run["seed_with_run_id"]
        group = {
            key: {name: run[name] for name in model.parameter_fields()}
            for key, model in GROUPS.items()
        }
        endpoints = group["endpoints"]
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # The exit task may not consume other tasks' outputs: it finds the pipeline's
        # MLflow run by the KFP run id instead.
        closer = _step(ops["finish"](game=game, pipeline_run_id=run_id, endpoints=endpoints))
        with dsl.ExitHandler(closer, name="alphazero-loop"):
            start = _step(
                ops["begin"](
                    game=game,
                    pipeline_run_id=run_id,
                    iterations=iterations,
                    selfplay=group["selfplay"],
                    training=group["training"],
                    gate=group["gate"],
                    retention=group["retention"],
                    endpoints=endpoints,
                )
            )
            start.set_caching_options(False)
            champion = ""  # the first iteration reads the registry's champion, if any
            summary = None  # the previous iteration's report
            for i in range(1, iterations + 1):
                fanout = _step(
                    ops["plan"](
                        game=game, champion=champion, shards=run["shards"], endpoints=endpoints
                    )
                )
                fanout.set_display_name(f"plan {i}").set_caching_options(False)
                fanout.after(start)
                if summary is not None:
                    # Reported before the next iteration starts, so what the report
                    # pushes (the Pushgateway keeps the last push) is the newest.
                    fanout.after(summary)
                with dsl.ParallelFor(
                    fanout.output, parallelism=parallelism, name=f"selfplay-{i}"
                ) as item:
                    play = _step(
                        ops["selfplay"](
                            game=game,
                            iteration=i,
                            shard=item.shard,
                            champion=item.champion,
                            settings=group["selfplay"],
                            endpoints=endpoints,
                            pipeline_run_id=run_id,
                            seed=seed,
                            seed_with_run_id=fresh_seeds,
                        )
                    )
                    play.set_display_name(f"selfplay {i}").set_caching_options(False)
                    # One shard is one thread of search and one onnxruntime thread
                    # (evaluators/onnx_model.py): a second core would sit idle.
                    # More shards, not bigger pods, use more cores.
                    play.set_cpu_request("1").set_memory_request("2Gi").set_memory_limit("4Gi")
                    play.set_retry(num_retries=2)
                learn = _step(
                    ops["train"](
                        game=game,
                        iteration=i,
                        shards=dsl.Collected(play.output),
                        champion=champion,
                        settings=group["training"],
                        endpoints=endpoints,
                        pipeline_run_id=run_id,
                        parent_run_id=start.output,
                        seed=seed,
                        seed_with_run_id=fresh_seeds,
                        device="cuda" if training_gpus else "cpu",
                    )
                )
                learn.set_display_name(f"train {i}").set_caching_options(False)
                learn.set_cpu_request("4").set_cpu_limit("8")
                learn.set_memory_request("16Gi").set_memory_limit("32Gi")
                learn.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2)
                if training_gpus:
                    _on_gpu_nodes(learn, training_gpus)
                judge = _step(
                    ops["arena"](
                        game=game,
                        challenger=learn.output,
                        settings=group["gate"],
                        endpoints=endpoints,
                        seed=seed,
                    )
                )
                judge.set_display_name(f"arena {i}").set_caching_options(False)
                judge.set_cpu_request("2").set_memory_request("2Gi")
                with dsl.If(judge.output == True, name=f"gate-passed-{i}"):  # noqa: E712
                    crown = _step(
                        ops["promote"](game=game, challenger=learn.output, endpoints=endpoints)
                    )
                    crown.set_display_name(f"promote {i}").set_caching_options(False)
                    crown.set_retry(num_retries=3)
                with dsl.Else(name=f"gate-failed-{i}"):
                    hold = _step(ops["keep"](game=game, endpoints=endpoints))
                    hold.set_display_name(f"keep champion {i}").set_caching_options(False)
                champion = dsl.OneOf(crown.output, hold.output)
                # What the KFP UI shows of the iteration: metrics, a summary, the model.
                summary = _step(
                    ops["report"](
                        game=game,
                        iteration=i,
                        challenger=learn.output,
                        champion=champion,
                        endpoints=endpoints,
                        pipeline_run_id=run_id,
                    )
                )
                summary.set_display_name(f"report {i}").set_caching_options(False)
            # Retention for the game once the loop is over: storage stays bounded
            # however often the run recurs (cartridge.retention says what is kept).
            collect = _step(ops["gc"](game=game, settings=group["retention"], endpoints=endpoints))
            collect.set_display_name("collect garbage").set_caching_options(False)
            collect.after(summary)

    alphazero.__signature__ = inspect.Signature(
        [
            inspect.Parameter(
                name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=kind
            )
            for name, kind, default in parameters
        ]
    )
    return dsl.pipeline(
        name="cartridge-alphazero",
        description="Self-play, training, arena and gated promotion of a champion.",
    )(alphazero)
