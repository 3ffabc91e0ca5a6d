"""The AlphaZero loop as a Kubeflow pipeline.

Per iteration: plan -> self-play shards in a `ParallelFor` -> train (GPU, spot-tolerant,
retried) on the game's replay window (the last K iterations, across runs) -> arena against the
champion -> promote under `dsl.If` when the gate passes (`dsl.Else`: keep the champion).
The next iteration's champion is `dsl.OneOf` the two branches' outputs, so it starts only
after the promotion settled and plays the right network. An `ExitHandler` closes the
pipeline's MLflow run, as FAILED when any step failed.

The champion reaches the self-play tasks inside the loop items (`plan` builds them)
rather than as a separate input: kfp.local (2.17) hands a task output given to a
`ParallelFor` body the loop item instead.

Iterations are unrolled when the pipeline is compiled (`iterations` is a compile-time
setting): one run then shows the whole loop in the KFP UI, every step keeps its own
retries, caching and logs, and a failure anywhere stops the run before a later
iteration can promote from it. A driver chaining one-iteration runs would spread one
training job over many runs and lose that single view.

Components are lightweight Python functions that import `cartridge` inside their body
and run from one image holding kfp and the package (`install_kfp_package=False`), so
nothing is installed at run time. (No `from __future__ import annotations` here: KFP reads
the component signatures' annotations as real types.)
"""

from kfp import dsl, kubernetes

DEFAULT_IMAGE = "ghcr.io/cartridge-ml/cartridge:latest"
CREDENTIALS_SECRET = "cartridge-s3"  # AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the cluster


def build_components(image: str = DEFAULT_IMAGE) -> dict:
    """The components, all on `image`. Each is a shell around one `cartridge.loop` step."""

    def component(function):
        return dsl.component(function, base_image=image, install_kfp_package=False)

    @component
    def begin(
        game: str,
        pipeline_run_id: str,
        iterations: int,
        games_per_shard: int,
        simulations: int,
        value_discount: float,
        full_search_fraction: float,
        fast_simulations: int,
        search_value_weight: float,
        random_opening_plies: int,
        td_steps: int,
        train_steps: int,
        batch_size: int,
        replay_window: int,
        train_from: str,
        arena_games: int,
        gate_method: str,
        gate_threshold: float,
        gate_solver_z: float,
        mlflow_tracking_uri: str,
        s3_endpoint: str,
    ) -> str:
        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        params = {
            "iterations": iterations,
            "games_per_shard": games_per_shard,
            "simulations": simulations,
            "value_discount": value_discount,
            "full_search_fraction": full_search_fraction,
            "fast_simulations": fast_simulations,
            "search_value_weight": search_value_weight,
            "random_opening_plies": random_opening_plies,
            "td_steps": td_steps,
            "train_steps": train_steps,
            "batch_size": batch_size,
            "replay_window": replay_window,
            "train_from": train_from,
            "arena_games": arena_games,
            "gate_method": gate_method,
            "gate_threshold": gate_threshold,
            "gate_solver_z": gate_solver_z,
        }
        return loop.begin_pipeline_run(game, pipeline_run_id, params)

    @component
    def plan(
        game: str, champion: str, shards: list, mlflow_tracking_uri: str, s3_endpoint: str
    ) -> list:
        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        return loop.plan_selfplay(game, champion, shards)

    @component
    def selfplay(
        game: str,
        iteration: int,
        shard: int,
        champion: str,
        games: int,
        simulations: int,
        replay_root: str,
        pipeline_run_id: str,
        seed: int,
        value_discount: float,
        full_search_fraction: float,
        fast_simulations: int,
        search_value_weight: float,
        random_opening_plies: int,
        td_steps: int,
        mlflow_tracking_uri: str,
        s3_endpoint: str,
    ) -> str:
        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        return loop.selfplay_step(
            game,
            iteration,
            shard,
            games,
            simulations,
            replay_root,
            pipeline_run_id,
            seed,
            loop.champion_version(game, champion),
            value_discount,
            full_search_fraction,
            fast_simulations,
            search_value_weight,
            random_opening_plies,
            td_steps,
        )

    @component
    def train(
        game: str,
        iteration: int,
        shards: list,
        champion: str,
        replay_root: str,
        pipeline_run_id: str,
        window: int,
        steps: int,
        batch_size: int,
        checkpoint_root: str,
        parent_run_id: str,
        seed: int,
        network_blocks: int,
        network_channels: int,
        train_from: str,
        mlflow_tracking_uri: str,
        s3_endpoint: str,
    ) -> str:
        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        version = loop.champion_version(game, champion)
        print(f"iteration {iteration}: {len(shards)} new shards; champion v{version or '-'}")
        return loop.train_step(
            game,
            iteration,
            replay_root,
            pipeline_run_id,
            window,
            steps,
            batch_size,
            checkpoint_root,
            parent_run_id,
            seed,
            version,
            network_blocks,
            network_channels,
            train_from,
        )

    @component
    def arena(
        game: str,
        challenger: str,
        games: int,
        simulations: int,
        gate_method: str,
        gate_threshold: float,
        gate_solver_z: float,
        seed: int,
        mlflow_tracking_uri: str,
        s3_endpoint: str,
    ) -> bool:
        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        print(f"challenger {challenger}")
        return loop.arena_step(
            game, games, simulations, gate_method, gate_threshold, seed, gate_solver_z
        )

    @component
    def promote(
        game: str, challenger: str, mlflow_tracking_uri: str, s3_endpoint: str, triton_url: str
    ) -> str:
        import os

        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        if triton_url:  # promotion asks this Triton to load the new champion
            os.environ["CARTRIDGE_TRITON_URL"] = triton_url
        return loop.promote_step(game, challenger)

    @component
    def keep(game: str, mlflow_tracking_uri: str, s3_endpoint: str) -> str:
        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        return loop.keep_step(game)

    @component
    def finish(
        game: str,
        pipeline_run_id: str,
        mlflow_tracking_uri: str,
        s3_endpoint: str,
        status: dsl.PipelineTaskFinalStatus,
    ):
        from cartridge import loop

        loop.connect(mlflow_tracking_uri, s3_endpoint)
        loop.finish_pipeline_run(
            game, pipeline_run_id, status.state == "SUCCEEDED", status.error_message or ""
        )

    return {
        "begin": begin,
        "plan": plan,
        "selfplay": selfplay,
        "train": train,
        "arena": arena,
        "promote": promote,
        "keep": keep,
        "finish": finish,
    }


def _with_credentials(task):
    """S3 keys from a Kubernetes secret on a cluster; locally the environment has them."""
    return kubernetes.use_secret_as_env(
        task,
        secret_name=CREDENTIALS_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )


def build_pipeline(iterations: int = 2, image: str = DEFAULT_IMAGE, parallelism: int = 4):
    """The pipeline function with `iterations` unrolled iterations."""
    if iterations < 1:
        raise ValueError(f"iterations must be at least 1, got {iterations}")
    ops = build_components(image)

    @dsl.pipeline(
        name="cartridge-alphazero",
        description="Self-play, training, arena and gated promotion of a champion.",
    )
    def alphazero(
        game: str = "tictactoe",
        shards: list = [0, 1],  # noqa: B006 - KFP reads the default as the shard ids
        games_per_shard: int = 64,
        simulations: int = 100,
        value_discount: float = 1.0,
        full_search_fraction: float = 1.0,
        fast_simulations: int = 0,
        search_value_weight: float = 0.0,
        random_opening_plies: int = 0,
        td_steps: int = 0,
        train_steps: int = 500,
        network_blocks: int = 5,
        network_channels: int = 64,
        batch_size: int = 256,
        replay_window: int = 4,
        train_from: str = "latest",
        arena_games: int = 40,
        arena_simulations: int = 100,
        gate_method: str = "lcb",
        gate_threshold: float = 0.55,
        gate_solver_z: float = 0.0,
        seed: int = 0,
        mlflow_tracking_uri: str = "http://mlflow.cartridge.svc:5000",
        s3_endpoint: str = "http://minio.cartridge.svc:9000",
        triton_url: str = "http://triton.cartridge.svc:8000",
        replay_root: str = "s3://cartridge/replay",
        checkpoint_root: str = "s3://cartridge/checkpoints",
    ):
        endpoints = {"mlflow_tracking_uri": mlflow_tracking_uri, "s3_endpoint": s3_endpoint}
        run_id = dsl.PIPELINE_JOB_ID_PLACEHOLDER
        # The exit task may not consume other tasks' outputs: it finds the pipeline's
        # MLflow run by the KFP run id instead.
        closer = _with_credentials(ops["finish"](game=game, pipeline_run_id=run_id, **endpoints))
        with dsl.ExitHandler(closer, name="alphazero-loop"):
            start = _with_credentials(
                ops["begin"](
                    game=game,
                    pipeline_run_id=run_id,
                    iterations=iterations,
                    games_per_shard=games_per_shard,
                    simulations=simulations,
                    value_discount=value_discount,
                    full_search_fraction=full_search_fraction,
                    fast_simulations=fast_simulations,
                    search_value_weight=search_value_weight,
                    random_opening_plies=random_opening_plies,
                    td_steps=td_steps,
                    train_steps=train_steps,
                    batch_size=batch_size,
                    replay_window=replay_window,
                    train_from=train_from,
                    arena_games=arena_games,
                    gate_method=gate_method,
                    gate_threshold=gate_threshold,
                    gate_solver_z=gate_solver_z,
                    **endpoints,
                )
            )
            start.set_caching_options(False)
            champion = ""  # the first iteration reads the registry's champion, if any
            for i in range(1, iterations + 1):
                fanout = _with_credentials(
                    ops["plan"](game=game, champion=champion, shards=shards, **endpoints)
                )
                fanout.set_display_name(f"plan {i}").set_caching_options(False)
                fanout.after(start)
                with dsl.ParallelFor(
                    fanout.output, parallelism=parallelism, name=f"selfplay-{i}"
                ) as item:
                    play = _with_credentials(
                        ops["selfplay"](
                            game=game,
                            iteration=i,
                            shard=item.shard,
                            champion=item.champion,
                            games=games_per_shard,
                            simulations=simulations,
                            replay_root=replay_root,
                            pipeline_run_id=run_id,
                            seed=seed,
                            value_discount=value_discount,
                            full_search_fraction=full_search_fraction,
                            fast_simulations=fast_simulations,
                            search_value_weight=search_value_weight,
                            random_opening_plies=random_opening_plies,
                            td_steps=td_steps,
                            **endpoints,
                        )
                    )
                    play.set_display_name(f"selfplay {i}").set_caching_options(False)
                    # One shard is one thread of search and one onnxruntime thread
                    # (evaluators/onnx_model.py): a second core would sit idle.
                    # More shards, not bigger pods, use more cores.
                    play.set_cpu_request("1").set_memory_request("2Gi").set_memory_limit("4Gi")
                    play.set_retry(num_retries=2)
                learn = _with_credentials(
                    ops["train"](
                        game=game,
                        iteration=i,
                        shards=dsl.Collected(play.output),
                        champion=champion,
                        replay_root=replay_root,
                        pipeline_run_id=run_id,
                        window=replay_window,
                        steps=train_steps,
                        batch_size=batch_size,
                        checkpoint_root=checkpoint_root,
                        parent_run_id=start.output,
                        seed=seed,
                        network_blocks=network_blocks,
                        network_channels=network_channels,
                        train_from=train_from,
                        **endpoints,
                    )
                )
                learn.set_display_name(f"train {i}").set_caching_options(False)
                learn.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
                learn.set_cpu_request("4").set_cpu_limit("8")
                learn.set_memory_request("16Gi").set_memory_limit("32Gi")
                learn.set_retry(num_retries=3, backoff_duration="60s", backoff_factor=2)
                kubernetes.add_toleration(
                    learn,
                    key="cloud.google.com/gke-spot",
                    operator="Equal",
                    value="true",
                    effect="NoSchedule",
                )
                kubernetes.add_node_selector(learn, label_key="cartridge/pool", label_value="gpu")
                judge = _with_credentials(
                    ops["arena"](
                        game=game,
                        challenger=learn.output,
                        games=arena_games,
                        simulations=arena_simulations,
                        gate_method=gate_method,
                        gate_threshold=gate_threshold,
                        gate_solver_z=gate_solver_z,
                        seed=seed,
                        **endpoints,
                    )
                )
                judge.set_display_name(f"arena {i}").set_caching_options(False)
                judge.set_cpu_request("2").set_memory_request("2Gi")
                with dsl.If(judge.output == True, name=f"gate-passed-{i}"):  # noqa: E712
                    crown = _with_credentials(
                        ops["promote"](
                            game=game, challenger=learn.output, triton_url=triton_url, **endpoints
                        )
                    )
                    crown.set_display_name(f"promote {i}").set_caching_options(False)
                    crown.set_retry(num_retries=3)
                with dsl.Else(name=f"gate-failed-{i}"):
                    hold = _with_credentials(ops["keep"](game=game, **endpoints))
                    hold.set_display_name(f"keep champion {i}").set_caching_options(False)
                champion = dsl.OneOf(crown.output, hold.output)

    return alphazero
