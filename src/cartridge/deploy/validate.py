"""Offline checks for everything that ships to a cluster: manifests, images, workflows.

No cluster runs where these checks run, so each deliverable is checked as strictly
as a tool allows without one. Every overlay is rendered with `kubectl kustomize`,
then the renders (not the raw kustomize folder, whose patch fragments are not
whole objects) go through the schema, removed-API and security checks. Each check
is a small function that returns a `CheckResult`, so tests can point one at a
deliberately broken copy of the tree and see it fail.

The checkers come from PyPI into their own virtualenv (`requirements-validate.txt`);
`kubectl` is the one outside binary (it carries kustomize).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

OVERLAYS = ("local", "staging", "production")
KUBERNETES_VERSION = "1.32.0"

# apiVersion (and kind, where only some kinds went) -> the Kubernetes minor release that
# removed it, from the upstream deprecation guide. kubernetes-validate only warns when
# it has no schema for an apiVersion, so a removed API would otherwise pass.
REMOVED_APIS: dict[tuple[str, str | None], tuple[int, int]] = {
    ("extensions/v1beta1", "Ingress"): (1, 22),
    ("extensions/v1beta1", None): (1, 16),
    ("apps/v1beta1", None): (1, 16),
    ("apps/v1beta2", None): (1, 16),
    ("networking.k8s.io/v1beta1", None): (1, 22),
    ("rbac.authorization.k8s.io/v1beta1", None): (1, 22),
    ("admissionregistration.k8s.io/v1beta1", None): (1, 22),
    ("apiextensions.k8s.io/v1beta1", None): (1, 22),
    ("apiregistration.k8s.io/v1beta1", None): (1, 22),
    ("authentication.k8s.io/v1beta1", None): (1, 22),
    ("authorization.k8s.io/v1beta1", None): (1, 22),
    ("certificates.k8s.io/v1beta1", None): (1, 22),
    ("coordination.k8s.io/v1beta1", None): (1, 22),
    ("scheduling.k8s.io/v1beta1", None): (1, 22),
    ("storage.k8s.io/v1beta1", "CSIStorageCapacity"): (1, 27),
    ("storage.k8s.io/v1beta1", None): (1, 22),
    ("batch/v1beta1", None): (1, 25),
    ("discovery.k8s.io/v1beta1", None): (1, 25),
    ("events.k8s.io/v1beta1", None): (1, 25),
    ("node.k8s.io/v1beta1", None): (1, 25),
    ("policy/v1beta1", None): (1, 25),
    ("autoscaling/v2beta1", None): (1, 25),
    ("autoscaling/v2beta2", None): (1, 26),
    ("flowcontrol.apiserver.k8s.io/v1beta1", None): (1, 26),
    ("flowcontrol.apiserver.k8s.io/v1beta2", None): (1, 29),
    ("resource.k8s.io/v1alpha2", None): (1, 31),
}


class ToolMissing(RuntimeError):
    """A checker is not installed where the chain looks for it."""


@dataclass
class CheckResult:
    name: str
    ok: bool
    output: str = ""


# What ships to a cluster, relative to the repository root: what these checks read.
DELIVERABLES = ("kustomize", "docker", ".github", "scripts", "skaffold.yaml", ".yamllint.yaml")
REPORT = "report.json"


def deliverables_digest(root: Path) -> str:
    """One hash over every deliverable file's path and bytes: a report says which
    tree it checked, so a stale one is told from a fresh one."""
    digest = hashlib.sha256()
    for name in DELIVERABLES:
        top = Path(root) / name
        files = sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]
        for path in (p for p in files if p.is_file()):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@dataclass
class Tree:
    """Where the deliverables live; tests point one at a broken copy."""

    root: Path
    overlays: tuple[str, ...] = OVERLAYS
    renders: dict[str, Path] = field(default_factory=dict)

    @property
    def kustomize(self) -> Path:
        return self.root / "kustomize"

    @property
    def dockerfiles(self) -> list[Path]:
        return sorted((self.root / "docker").glob("*.Dockerfile"))

    @property
    def workflows(self) -> list[Path]:
        return sorted((self.root / ".github" / "workflows").glob("*.yml"))

    @property
    def scripts(self) -> list[Path]:
        return sorted((self.root / "scripts").glob("*.sh"))

    @property
    def yaml_files(self) -> list[Path]:
        files = [*self.kustomize.rglob("*.yaml"), *self.workflows]
        files += [p for p in (self.root / "skaffold.yaml",) if p.exists()]
        return sorted(files)


class Tools:
    """The checkers' executables: the tools virtualenv's bin, then PATH (for kubectl)."""

    def __init__(self, bin_dir: Path):
        self.bin_dir = Path(bin_dir)

    def path(self, name: str) -> str:
        found = shutil.which(name, path=str(self.bin_dir)) or (
            shutil.which(name) if name == "kubectl" else None
        )
        if not found:
            where = "PATH" if name == "kubectl" else self.bin_dir
            raise ToolMissing(
                f"{name} not found in {where}; run `make validate` to install the checkers"
            )
        return found

    def run(self, name: str, *args: str | Path, cwd: Path | None = None) -> tuple[int, str]:
        env = {**os.environ, "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run(
            [self.path(name), *map(str, args)],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        return done.returncode, (done.stdout + done.stderr).strip()


def render(tree: Tree, tools: Tools, out_dir: Path) -> CheckResult:
    """`kubectl kustomize` every overlay into `out_dir/<overlay>.yaml`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    failures = []
    for overlay in tree.overlays:
        code, output = tools.run("kubectl", "kustomize", tree.kustomize / "overlays" / overlay)
        if code != 0:
            failures.append(f"{overlay}: {output}")
            continue
        target = out_dir / f"{overlay}.yaml"
        target.write_text(output + "\n")
        tree.renders[overlay] = target
    return CheckResult("kustomize render", not failures, "\n".join(failures))


def _objects(renders: Iterable[Path]) -> Iterable[tuple[Path, dict]]:
    for path in renders:
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                yield path, document


def check_schemas(tree: Tree, tools: Tools) -> CheckResult:
    """Every object against the Kubernetes OpenAPI schemas, unknown fields refused."""
    code, output = tools.run(
        "kubernetes-validate",
        "--strict",
        "--kubernetes-version",
        KUBERNETES_VERSION,
        *tree.renders.values(),
    )
    errors = [line for line in output.splitlines() if line.startswith("ERROR")]
    return CheckResult("kubernetes-validate --strict", code == 0 and not errors, output)


def check_removed_apis(tree: Tree, version: str = KUBERNETES_VERSION) -> CheckResult:
    """No object may use an apiVersion that `version` (or an older release) removed."""
    target = tuple(int(part) for part in version.split(".")[:2])
    found = []
    for path, obj in _objects(tree.renders.values()):
        api, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        removed_in = REMOVED_APIS.get((api, kind)) or REMOVED_APIS.get((api, None))
        if removed_in and removed_in <= target:
            name = obj.get("metadata", {}).get("name", "?")
            found.append(
                f"{path.name}: {kind}/{name} uses {api}, removed in Kubernetes "
                f"{removed_in[0]}.{removed_in[1]}"
            )
    return CheckResult(f"removed APIs (Kubernetes {version})", not found, "\n".join(found))


def check_checkov(tree: Tree, tools: Tools) -> CheckResult:
    """checkov's Kubernetes and Dockerfile policies; waivers are `checkov.io/skip`
    annotations next to the resource, each with its reason."""
    files = [*tree.renders.values(), *tree.dockerfiles]
    args = [arg for path in files for arg in ("-f", path)]
    code, output = tools.run(
        "checkov",
        *args,
        "--framework",
        "kubernetes",
        "dockerfile",
        "--compact",
        "--quiet",
        "--skip-download",
    )
    return CheckResult("checkov", code == 0, output)


def check_trivy(tree: Tree, tools: Tools, cache_dir: Path) -> CheckResult:
    """trivy's misconfiguration checks (bundled, no download) at HIGH and CRITICAL."""
    outputs, ok = [], True
    targets = {path.parent for path in tree.renders.values()} | {tree.root / "docker"}
    for target in sorted(targets):
        code, output = tools.run(
            "trivy",
            "config",
            "--skip-check-update",
            "--cache-dir",
            cache_dir,
            "--severity",
            "HIGH,CRITICAL",
            "--exit-code",
            "1",
            "--quiet",
            target,
        )
        ok &= code == 0
        outputs.append(output)
    return CheckResult("trivy config", ok, "\n".join(o for o in outputs if o))


def check_yamllint(tree: Tree, tools: Tools) -> CheckResult:
    config = tree.root / ".yamllint.yaml"
    code, output = tools.run("yamllint", "--strict", "-c", config, *tree.yaml_files)
    return CheckResult("yamllint", code == 0, output)


def check_hadolint(tree: Tree, tools: Tools) -> CheckResult:
    code, output = tools.run("hadolint", "--no-color", *tree.dockerfiles)
    return CheckResult("hadolint", code == 0, output)


def check_actionlint(tree: Tree, tools: Tools) -> CheckResult:
    """actionlint, with shellcheck on every `run:` script (found on the tools' PATH)."""
    code, output = tools.run("actionlint", "-no-color", *tree.workflows, cwd=tree.root)
    return CheckResult("actionlint", code == 0, output)


def check_zizmor(tree: Tree, tools: Tools) -> CheckResult:
    code, output = tools.run("zizmor", "--offline", "--no-progress", *tree.workflows)
    return CheckResult("zizmor", code == 0, output)


def check_shellcheck(tree: Tree, tools: Tools) -> CheckResult:
    if not tree.scripts:
        return CheckResult("shellcheck", True, "no scripts")
    code, output = tools.run("shellcheck", *tree.scripts)
    return CheckResult("shellcheck", code == 0, output)


def check_skaffold(tree: Tree) -> CheckResult:
    """skaffold.yaml against the tree it drives (no skaffold binary or cluster here):
    every artifact builds from a Dockerfile that exists and replaces an image the
    rendered overlay really uses, and every port forward names a Service port."""
    path = tree.root / "skaffold.yaml"
    if not path.exists():
        return CheckResult("skaffold.yaml", False, f"{path} is missing")
    config = yaml.safe_load(path.read_text()) or {}
    problems = []
    if config.get("kind") != "Config" or not str(config.get("apiVersion", "")).startswith(
        "skaffold/v4"
    ):
        problems.append("expected apiVersion skaffold/v4* and kind Config")
    images, services = set(), {}
    for overlay_path in config.get("manifests", {}).get("kustomize", {}).get("paths", []):
        overlay = Path(overlay_path).name
        if overlay not in tree.renders:
            problems.append(f"kustomize path {overlay_path} is not a rendered overlay")
            continue
        for _, obj in _objects([tree.renders[overlay]]):
            images |= {
                container["image"].rsplit(":", 1)[0]
                for container in _containers(obj)
                if "image" in container
            }
            if obj.get("kind") == "Service":
                key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
                services[key] = {port["port"] for port in obj["spec"].get("ports", [])}
    for artifact in config.get("build", {}).get("artifacts", []):
        dockerfile = artifact.get("docker", {}).get("dockerfile", "Dockerfile")
        if not (tree.root / artifact.get("context", ".") / dockerfile).exists():
            problems.append(f"{artifact['image']}: {dockerfile} does not exist")
        if artifact["image"] not in images:
            problems.append(f"{artifact['image']}: no workload in the overlay uses it")
    for forward in config.get("portForward", []):
        key = (forward.get("namespace"), forward.get("resourceName"))
        if forward.get("resourceType") == "service" and forward.get("port") not in services.get(
            key, ()
        ):
            problems.append(f"port forward {key[0]}/{key[1]}:{forward.get('port')}: no such port")
    return CheckResult("skaffold.yaml", not problems, "\n".join(problems))


def _containers(obj: dict) -> list[dict]:
    spec = obj.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    if obj.get("kind") == "CronJob":
        pod = spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec", {})
    return [*pod.get("initContainers", []), *pod.get("containers", [])]


def validate(
    root: Path,
    tools_bin: Path,
    out_dir: Path,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    """The whole chain; every check runs even after one fails, so one pass shows all."""
    tree, tools = Tree(Path(root)), Tools(tools_bin)
    results = [render(tree, tools, out_dir / "rendered")]
    if on_result:
        on_result(results[0])
    checks: list[Callable[[], CheckResult]] = [
        lambda: check_schemas(tree, tools),
        lambda: check_removed_apis(tree),
        lambda: check_checkov(tree, tools),
        lambda: check_trivy(tree, tools, out_dir / "trivy-cache"),
        lambda: check_yamllint(tree, tools),
        lambda: check_hadolint(tree, tools),
        lambda: check_actionlint(tree, tools),
        lambda: check_zizmor(tree, tools),
        lambda: check_shellcheck(tree, tools),
        lambda: check_skaffold(tree),
    ]
    for check in checks:
        results.append(check())
        if on_result:
            on_result(results[-1])
    report = {
        "deliverables_sha256": deliverables_digest(tree.root),
        "overlays": list(tree.overlays),
        "results": [result.__dict__ for result in results],
    }
    (out_dir / REPORT).write_text(json.dumps(report, indent=2))
    return results
