"""The offline checks for manifests, Dockerfiles and workflows catch what they claim to.

Each test breaks one thing in a copy of the repository's deliverables and expects the
check responsible for it to fail, naming the problem; the untouched copy passes them all.
The checkers come from `.venv-tools` (built by `make validate`, which `make test` runs).
"""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cartridge.cli import app
from cartridge.deploy import validate as checks

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / ".venv-tools" / "bin"
DELIVERABLES = checks.DELIVERABLES
# `make validate` (run by `make test` just before the suite) writes its report here.
VALIDATE_REPORT = REPO / "build" / "validate" / checks.REPORT


@pytest.fixture(scope="module")
def tools():
    if not (TOOLS / "checkov").exists():
        pytest.fail(f"{TOOLS} has no checkers: run `make validate` (part of `make test`)")
    return checks.Tools(TOOLS)


@pytest.fixture
def tree(tmp_path):
    for name in DELIVERABLES:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, tmp_path / name)
        else:
            shutil.copy2(source, tmp_path / name)
    return checks.Tree(tmp_path)


def rendered(tree, tools, overlays=("local",)):
    tree.overlays = overlays
    result = checks.render(tree, tools, tree.root / "build")
    assert result.ok, result.output
    return tree


def edit_yaml(path: Path, change) -> None:
    documents = list(yaml.safe_load_all(path.read_text()))
    for document in documents:
        change(document)
    path.write_text(yaml.safe_dump_all(documents, sort_keys=False))


def web_container(document):
    return document["spec"]["template"]["spec"]["containers"][0]


def test_the_repository_passes_every_check():
    """Read from the report of the `make validate` that ran just before, rather than
    running the whole chain again; the report must be of this very tree."""
    if not VALIDATE_REPORT.is_file():
        pytest.fail(f"no {VALIDATE_REPORT}: run `make validate` (part of `make test`)")
    report = json.loads(VALIDATE_REPORT.read_text())
    assert report["deliverables_sha256"] == checks.deliverables_digest(REPO), (
        "the validate report is of an older tree: run `make validate`"
    )
    results = [checks.CheckResult(**r) for r in report["results"]]
    assert [r.name for r in results if not r.ok] == [], [r.output for r in results if not r.ok]
    assert set(report["overlays"]) == set(checks.OVERLAYS)
    assert len(results) == 11


def test_a_patch_that_does_not_apply_fails_the_render(tree, tools):
    patch = tree.kustomize / "overlays" / "local" / "patches" / "resources-small.yaml"
    patch.write_text(patch.read_text().replace("  name: minio\n", "  name: no-such-set\n", 1))
    tree.overlays = ("local",)
    result = checks.render(tree, tools, tree.root / "build")
    assert not result.ok and "no-such-set" in result.output


def test_an_unknown_field_fails_the_strict_schema_check(tree, tools):
    edit_yaml(
        tree.kustomize / "base" / "web" / "deployment.yaml",
        lambda d: d["spec"].update(replica=2),  # a typo of `replicas`
    )
    result = checks.check_schemas(rendered(tree, tools), tools)
    assert not result.ok and "replica" in result.output


def test_a_removed_api_version_fails(tree, tools):
    edit_yaml(
        tree.kustomize / "base" / "web" / "pdb.yaml",
        lambda d: d.update(apiVersion="policy/v1beta1"),
    )
    result = checks.check_removed_apis(rendered(tree, tools))
    assert not result.ok
    assert "PodDisruptionBudget/web uses policy/v1beta1, removed in Kubernetes 1.25" in (
        result.output
    )
    # The same manifest was still valid for a cluster older than the removal.
    assert checks.check_removed_apis(tree, version="1.24.0").ok


def test_a_privileged_container_fails_checkov_and_trivy(tree, tools):
    def privileged(document):
        web_container(document)["securityContext"].update(
            privileged=True, allowPrivilegeEscalation=True
        )

    edit_yaml(tree.kustomize / "base" / "web" / "deployment.yaml", privileged)
    rendered(tree, tools)
    checkov = checks.check_checkov(tree, tools)
    assert not checkov.ok and "CKV_K8S_16" in checkov.output  # privileged containers
    trivy = checks.check_trivy(tree, tools, tree.root / "build" / "trivy-cache")
    assert not trivy.ok and "KSV-0017" in trivy.output  # privileged, HIGH


def test_a_waiver_covers_only_the_check_it_names(tree, tools):
    # Drop the web API's waiver for image digests: checkov must flag exactly that again.
    def unwaive(document):
        annotations = document["metadata"]["annotations"]
        for key in [k for k, v in annotations.items() if v.startswith("CKV_K8S_43=")]:
            del annotations[key]

    edit_yaml(tree.kustomize / "base" / "web" / "deployment.yaml", unwaive)
    result = checks.check_checkov(rendered(tree, tools), tools)
    assert not result.ok and "CKV_K8S_43" in result.output
    assert "Deployment.cartridge.web" in result.output and "mlflow" not in result.output


def test_a_secret_in_the_environment_fails_checkov(tree, tools):
    def env_secret(document):
        web_container(document).setdefault("env", []).append(
            {
                "name": "TOKEN",
                "valueFrom": {"secretKeyRef": {"name": "cartridge-s3", "key": "TOKEN"}},
            }
        )

    edit_yaml(tree.kustomize / "base" / "web" / "deployment.yaml", env_secret)
    result = checks.check_checkov(rendered(tree, tools), tools)
    assert not result.ok and "CKV_K8S_35" in result.output


def test_a_latest_base_image_and_root_user_fail_hadolint(tree, tools):
    dockerfile = tree.root / "docker" / "frontend.Dockerfile"
    text = dockerfile.read_text().replace(
        "FROM nginxinc/nginx-unprivileged:1.27.3-alpine", "FROM nginx:latest"
    )
    dockerfile.write_text(text.replace("USER 101", "USER root"))
    result = checks.check_hadolint(tree, tools)
    assert not result.ok
    assert "DL3007" in result.output and "DL3002" in result.output


def test_template_injection_in_a_workflow_fails_zizmor(tree, tools):
    workflow = tree.root / ".github" / "workflows" / "ci.yml"
    text = workflow.read_text().replace(
        "        run: make test\n",
        '        run: echo "${{ github.event.pull_request.title }}" && make test\n',
    )
    workflow.write_text(text)
    result = checks.check_zizmor(tree, tools)
    assert not result.ok and "template-injection" in result.output


def test_a_job_needing_a_missing_job_fails_actionlint(tree, tools):
    workflow = tree.root / ".github" / "workflows" / "ci.yml"
    text = workflow.read_text().replace(
        "    runs-on: ubuntu-24.04\n", "    runs-on: ubuntu-24.04\n    needs: build-wheels\n", 1
    )
    workflow.write_text(text)
    result = checks.check_actionlint(tree, tools)
    assert not result.ok and "build-wheels" in result.output


def test_a_duplicate_key_fails_yamllint(tree, tools):
    service = tree.kustomize / "base" / "web" / "service.yaml"
    service.write_text(service.read_text() + "kind: Service\n")
    result = checks.check_yamllint(tree, tools)
    assert not result.ok and "key-duplicates" in result.output


def test_an_unquoted_variable_in_a_script_fails_shellcheck(tree, tools):
    script = tree.root / "scripts" / "port-forward.sh"
    script.write_text(script.read_text().replace('"$namespace"', "$namespace", 1))
    result = checks.check_shellcheck(tree, tools)
    assert not result.ok and "SC2086" in result.output


def test_skaffold_must_match_the_overlay_it_deploys(tree, tools):
    def drift(config):
        config["build"]["artifacts"][0]["image"] = "localhost:5001/cartridge-web"
        config["build"]["artifacts"][1]["docker"]["dockerfile"] = "docker/ui.Dockerfile"
        config["portForward"][1]["port"] = 5001

    edit_yaml(tree.root / "skaffold.yaml", drift)
    result = checks.check_skaffold(rendered(tree, tools))
    assert not result.ok
    assert "localhost:5001/cartridge-web: no workload in the overlay uses it" in result.output
    assert "docker/ui.Dockerfile does not exist" in result.output
    assert "cartridge/mlflow:5001: no such port" in result.output


def test_the_cli_runs_the_whole_chain_and_fails_on_any_check(tree, tools):
    # Edited as text, so the file keeps its layout and only the security checks object.
    deployment = tree.kustomize / "base" / "web" / "deployment.yaml"
    flag = "            allowPrivilegeEscalation: false\n"
    deployment.write_text(
        deployment.read_text().replace(flag, flag + "            privileged: true\n")
    )
    result = CliRunner().invoke(
        app,
        [
            "validate",
            "--root",
            str(tree.root),
            "--tools",
            str(TOOLS),
            "--out",
            str(tree.root / "build"),
            "--json",
        ],
    )
    assert result.exit_code == 1
    failed = {r["name"] for r in json.loads(result.stdout) if not r["ok"]}
    assert failed == {"checkov", "trivy config"}


def test_missing_checkers_are_a_clear_error(tree, tmp_path):
    result = CliRunner().invoke(
        app, ["validate", "--root", str(tree.root), "--tools", str(tmp_path / "none")]
    )
    assert result.exit_code == 2
    assert "not found" in result.output and "make validate" in result.output
