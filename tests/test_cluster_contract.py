"""The cluster path, checked offline against the interfaces a cluster would check it with:
the KFP server's protos, the rendered overlays, the images the workflows build.

The renders come from `make validate` (run by `make test` before the suite).
"""

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from cartridge.cli import app
from cartridge.deploy import contract
from cartridge.deploy.images import PIPELINE_IMAGE, TRAINING_IMAGE, check_image
from cartridge.settings import Endpoints, TrainingSettings
from kfp_pipelines.alphazero import STEP_TIMEOUTS
from kfp_pipelines.runner import compile_pipeline, proto_problems

REPO = Path(__file__).resolve().parents[1]
RENDERS = REPO / "build" / "validate" / "rendered"
runner = CliRunner()


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """The pipeline as `cartridge pipeline compile` writes it, release images."""
    return compile_pipeline(tmp_path_factory.mktemp("ir"), iterations=2)


@pytest.fixture(scope="module")
def renders():
    paths = sorted(RENDERS.glob("*.yaml"))
    if len(paths) != 3:
        pytest.fail(f"no overlay renders in {RENDERS}: run `make validate` (part of `make test`)")
    return paths


def _write_ir(path: Path, change) -> Path:
    documents = list(yaml.safe_load_all(path.read_text()))
    change(documents)
    out = path.parent / f"changed-{path.name}"
    out.write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return out


def _write_render(path: Path, tmp_path: Path, change) -> Path:
    objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
    objects = [o for o in (change(copy.deepcopy(o)) for o in objects) if o is not None]
    out = tmp_path / path.name
    out.write_text(yaml.safe_dump_all(objects, sort_keys=False))
    return out


# -- the KFP server release ------------------------------------------------------------


def test_the_pinned_kfp_server_reads_every_field_the_sdk_compiles(compiled):
    version = contract.pinned_kfp_version(REPO)
    # The installed protos are the pinned server's own release...
    assert contract.server_proto_problems(version) == []
    # ...and they take every field of the compiled pipeline, unknown fields refused.
    assert proto_problems(compiled) == []
    # Nothing a user follows installs another release.
    for path in [REPO / "kustomize" / "README.md", *(REPO / "docs").glob("*.md")]:
        for found in re.findall(r"PIPELINE_VERSION=([0-9.]+)", path.read_text()):
            assert found == version, f"{path} installs KFP {found}, the script {version}"
    workflows = " ".join(p.read_text() for p in (REPO / ".github" / "workflows").glob("*.yml"))
    assert "PIPELINE_VERSION=" not in workflows.replace("scripts/install-kfp.sh", "")


def test_an_older_server_or_a_field_it_does_not_know_is_refused(compiled):
    problems = contract.server_proto_problems("2.4.0")
    assert len(problems) == 2 and all("2.4.0" in p for p in problems)

    def unknown_field(documents):
        executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        executors["exec-begin"]["secretAsEnv"][0]["notAField"] = True

    assert any("exec-begin" in p for p in proto_problems(_write_ir(compiled, unknown_field)))


def test_the_install_script_must_pin_one_release(tmp_path):
    (tmp_path / "scripts").mkdir()
    script = tmp_path / "scripts" / "install-kfp.sh"
    script.write_text("#!/bin/sh\nPIPELINE_VERSION=2.17.3\n")
    assert contract.pinned_kfp_version(tmp_path) == "2.17.3"
    for text in ("#!/bin/sh\n", "PIPELINE_VERSION=1\nPIPELINE_VERSION=2\n"):
        script.write_text(text)
        with pytest.raises(ValueError, match="exactly once"):
            contract.pinned_kfp_version(tmp_path)


# -- images and the GPU ---------------------------------------------------------------


def _executors(path):
    spec, platform = list(yaml.safe_load_all(path.read_text()))[:2]
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_training_runs_on_the_cuda_image_and_insists_on_a_gpu(compiled):
    spec, kubernetes = _executors(compiled)
    executors = spec["deploymentSpec"]["executors"]
    for name, executor in executors.items():
        expected = TRAINING_IMAGE if name.startswith("exec-train") else PIPELINE_IMAGE
        assert executor["container"]["image"] == expected, name
    train = executors["exec-train"]["container"]["resources"]["accelerator"]
    assert (train["resourceType"], train["resourceCount"]) == ("nvidia.com/gpu", "1")
    assert kubernetes["exec-train"]["nodeSelector"]["labels"] == {"cartridge/pool": "gpu"}
    tasks = contract.CompiledPipeline.read(compiled).tasks_calling("comp-train")
    assert tasks and all(
        t["inputs"]["parameters"]["device"]["runtimeValue"]["constant"] == "cuda" for t in tasks
    )


def test_cpu_training_requests_no_gpu(tmp_path):
    path = compile_pipeline(tmp_path, iterations=1, training_gpus=0)
    spec, kubernetes = _executors(path)
    assert (
        "accelerator"
        not in spec["deploymentSpec"]["executors"]["exec-train"]["container"]["resources"]
    )
    assert "nodeSelector" not in kubernetes["exec-train"]
    [task] = contract.CompiledPipeline.read(path).tasks_calling("comp-train")
    assert task["inputs"]["parameters"]["device"]["runtimeValue"]["constant"] == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible here")
def test_a_gpu_request_without_a_gpu_fails_before_anything_is_read(tmp_path):
    from cartridge.loop import train_step
    from cartridge.training.trainer import TrainingError

    nowhere = Endpoints(
        mlflow_tracking_uri="http://127.0.0.1:9",  # nothing listens: never reached
        s3_endpoint="http://127.0.0.1:9",
        replay_root=str(tmp_path),
        checkpoint_root=str(tmp_path),
    )
    with pytest.raises(TrainingError, match="no GPU is visible .*CPU-only build"):
        train_step(
            "tictactoe",
            1,
            "",
            settings=TrainingSettings(),
            endpoints=nowhere,
            pipeline_run_id="run",
            parent_run_id="parent",
            seed=0,
            device="cuda",
        )


def test_images_must_pin_what_runs(tmp_path):
    digest = "sha256:" + "a" * 64
    for good in ("reg/cartridge:1", f"reg/cartridge@{digest}", "localhost:5001/cartridge:dev"):
        assert check_image(good) == good
    for bad, reason in (
        ("reg/cartridge", "does not pin"),
        ("reg/cartridge:latest", "does not pin"),
        ("localhost:5001/cartridge", "does not pin"),
        ("reg/cartridge@sha256:abc", "64 hex"),
        ("", "not an image"),
    ):
        with pytest.raises(ValueError, match=reason):
            check_image(bad)
    result = runner.invoke(
        app,
        ["pipeline", "compile", "--out", str(tmp_path), "--training-image", "reg/train:latest"],
    )
    assert result.exit_code == 2
    assert "training image 'reg/train:latest' does not pin" in result.output
    assert not list(tmp_path.iterdir())


# -- timeouts ---------------------------------------------------------------------------


def test_every_step_has_its_timeout(compiled):
    assert contract.step_timeout_problems(compiled, STEP_TIMEOUTS) == []
    spec, _ = _executors(compiled)
    steps = {contract.step_of(name) for name in spec["deploymentSpec"]["executors"]}
    assert steps == set(STEP_TIMEOUTS)

    def no_deadline(documents):
        executors = documents[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
        del executors["exec-selfplay"]["activeDeadlineSeconds"]

    problems = contract.step_timeout_problems(_write_ir(compiled, no_deadline), STEP_TIMEOUTS)
    assert problems == ["exec-selfplay: no timeout (activeDeadlineSeconds)"]


# -- overlays, pipeline and images together -----------------------------------------------


def test_overlays_pipeline_and_images_agree(compiled, renders):
    assert contract.cluster_problems(REPO, compiled, renders) == []


def test_the_cross_check_names_each_disagreement(compiled, renders, tmp_path):
    local = next(p for p in renders if p.stem == "local")

    def problems(change=None, ir=compiled):
        render = _write_render(local, tmp_path, change) if change else local
        return contract.cluster_problems(REPO, ir, [render])

    old_tag = compile_pipeline(
        tmp_path / "old", 1, image="ghcr.io/cartridge-ml/cartridge:0.0.9",
        training_image="ghcr.io/cartridge-ml/cartridge-train:0.0.9",
    )  # fmt: skip
    assert any("exec-selfplay runs ghcr.io/cartridge-ml/cartridge:0.0.9" in p for p in problems(
        ir=old_tag))  # fmt: skip
    one_image = compile_pipeline(tmp_path / "one", 1, training_image=PIPELINE_IMAGE)
    assert any("exec-train" in p and "cartridge-train" in p for p in problems(ir=one_image))

    def without_kubeflow_secret(o):
        kubeflow = o["metadata"].get("namespace") == "kubeflow"
        return None if o["kind"] == "Secret" and kubeflow else o

    assert problems(without_kubeflow_secret) == [
        "local: the pipeline's Secret cartridge-s3 is not in kubeflow"
    ]

    def mlflow_on_another_port(o):
        if o["kind"] == "Service" and o["metadata"]["name"] == "mlflow":
            o["spec"]["ports"][0]["port"] = 5001
        return o

    assert problems(mlflow_on_another_port) == [
        "local: http://mlflow.cartridge.svc:5000: Service mlflow has no port 5000"
    ]

    def triton_closed_to_kubeflow(o):
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "triton":
            o["spec"]["ingress"] = [
                r for r in o["spec"]["ingress"] if "namespaceSelector" not in r["from"][0]
            ]
        return o

    closed = problems(triton_closed_to_kubeflow)
    assert len(closed) == 2 and all("no NetworkPolicy admits kubeflow" in p for p in closed)

    def web_without_its_account(o):
        return None if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == "web" else o

    assert problems(web_without_its_account) == ["local: web runs as missing ServiceAccount web"]

    def frontend_image_nobody_builds(o):
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "frontend":
            o["spec"]["template"]["spec"]["containers"][0]["image"] = "r/cartridge-ui:0.1.0"
        return o

    assert problems(frontend_image_nobody_builds) == [
        "local: deploys r/cartridge-ui:0.1.0, which no workflow builds"
    ]


def test_memory_quantities():
    assert contract.memory_mib("512Mi") == 512
    assert contract.memory_mib("1Gi") == 1024
    assert contract.memory_mib("1048576") == 1
    with pytest.raises(ValueError, match="unreadable"):
        contract.memory_mib("lots")


def test_scraped_ports_exist_and_are_open_to_monitoring(renders, tmp_path):
    production = next(p for p in renders if p.stem == "production")
    monitors = contract.Render(production).of_kind("PodMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {
        "web",
        "reconciler",
        "triton",
        "pushgateway",
    }
    assert contract.scrape_problems(contract.Render(production)) == []

    def wrong_port(o):
        if o["kind"] == "PodMonitor" and o["metadata"]["name"] == "triton":
            o["spec"]["podMetricsEndpoints"][0]["port"] = "prometheus"
        return o

    def no_scrape_policy(o):
        return None if o["metadata"]["name"] == "allow-prometheus-scrape" else o

    broken = contract.Render(_write_render(production, tmp_path, wrong_port))
    assert contract.scrape_problems(broken) == [
        "production: PodMonitor triton scrapes port 'prometheus', which its pods do not have"
    ]
    closed = contract.Render(_write_render(production, tmp_path, no_scrape_policy))
    assert len(contract.scrape_problems(closed)) == 3


# -- retention ---------------------------------------------------------------------------


def test_retention_runs_nightly_in_every_overlay_and_reaches_its_stores(renders, tmp_path):
    for path in renders:
        render = contract.Render(path)
        cron = render.find("CronJob", "gc", "cartridge")
        assert cron is not None, f"{path.stem}: no gc CronJob"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        pod = cron["spec"]["jobTemplate"]["spec"]["template"]
        command = pod["spec"]["containers"][0]["command"]
        assert command[0] == "cartridge" and "gc" in command
        # The command line is one the CLI takes.
        assert runner.invoke(app, [*command[1:], "--help"]).exit_code == 0
        labels = pod["metadata"]["labels"]
        for store, port in (("mlflow", 5000), ("minio", 9000)):
            store_labels = {"app.kubernetes.io/name": store}
            assert contract.pod_reaches(render, labels, store_labels, port), (path.stem, store)
        assert not contract.pod_reaches(render, labels, {"app.kubernetes.io/name": "triton"}, 8000)

    local = next(p for p in renders if p.stem == "local")

    def minio_closed_to_gc(o):
        if o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == "minio":
            for rule in o["spec"]["ingress"]:
                rule["from"] = [
                    peer
                    for peer in rule["from"]
                    if peer.get("podSelector", {})
                    .get("matchLabels", {})
                    .get("app.kubernetes.io/name")
                    != "gc"
                ]
        return o

    closed = contract.Render(_write_render(local, tmp_path, minio_closed_to_gc))
    gc_labels = {"app.kubernetes.io/name": "gc", "app.kubernetes.io/component": "retention"}
    assert not contract.pod_reaches(closed, gc_labels, {"app.kubernetes.io/name": "minio"}, 9000)


def test_the_bucket_lifecycle_rules_are_valid_s3_and_back_up_retention():
    """MinIO's rules, checked with the S3 API's own request model; they expire only
    checkpoints, and only long after retention and any training step are done with them."""
    import json

    from botocore.session import get_session
    from botocore.validate import ParamValidator

    from cartridge.settings import RetentionSettings
    from kfp_pipelines.alphazero import STEP_TIMEOUTS

    rules = json.loads((REPO / "kustomize/base/minio/lifecycle.json").read_text())
    shape = (
        get_session()
        .get_service_model("s3")
        .operation_model("PutBucketLifecycleConfiguration")
        .input_shape.members["LifecycleConfiguration"]
    )
    report = ParamValidator().validate(rules, shape)
    assert not report.has_errors(), report.generate_report()
    prefixes = {rule["Filter"]["Prefix"] for rule in rules["Rules"]}
    assert prefixes == {"checkpoints/"}  # replay, models and Triton: only gc knows what is used
    days = rules["Rules"][0]["Expiration"]["Days"]
    assert days > RetentionSettings().keep_failed_days + STEP_TIMEOUTS["train"] / 86400
    statuses = shape.members["Rules"].member.members["Status"].enum  # not checked by botocore
    assert all(rule["Status"] in statuses for rule in rules["Rules"])
    wrong = {"Rules": [{"Status": "Enabled", "Expiration": {"Days": "30"}}]}
    assert ParamValidator().validate(wrong, shape).has_errors()


def test_pipeline_steps_reach_the_pushgateway_where_monitoring_is_deployed(renders):
    monitored = [
        p for p in renders if contract.Render(p).find("Deployment", "pushgateway", "cartridge")
    ]
    assert [p.stem for p in monitored] == ["production"]
    render = contract.Render(monitored[0])
    url = "http://pushgateway.cartridge.svc:9091"
    assert contract.service_problems(render, url, "kubeflow") == []
    assert contract.service_problems(render, url, "monitoring") == []
    assert contract.scrape_problems(render) == []
    assert Endpoints.model_fields["pushgateway_url"].description.count(url) == 1


def test_every_cartridge_process_in_the_cluster_logs_json(compiled, renders):
    spec, _ = _executors(compiled)
    for name, executor in spec["deploymentSpec"]["executors"].items():
        env = {e["name"]: e["value"] for e in executor["container"].get("env", [])}
        assert env.get("CARTRIDGE_LOG_JSON") == "true", name
    for path in renders:
        render = contract.Render(path)
        configmaps = {o["metadata"]["name"]: o.get("data", {}) for o in render.of_kind("ConfigMap")}
        checked = set()
        for workload, template in render.pod_templates().items():
            for container in template["spec"]["containers"]:
                if container.get("command", [None])[0] != "cartridge":
                    continue  # MLflow's own server runs from our image too
                checked.add(workload)
                env = {e["name"]: e for e in container.get("env", [])}
                ref = env.get("CARTRIDGE_LOG_JSON", {}).get("valueFrom", {})
                ref = ref.get("configMapKeyRef", {})
                value = configmaps.get(ref.get("name"), {}).get(ref.get("key"))
                assert value == "true", (path.stem, workload)
        assert checked >= {"web", "reconciler", "gc"}, (path.stem, checked)
