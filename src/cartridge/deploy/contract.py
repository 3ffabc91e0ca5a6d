"""The cluster contract, checked offline: the compiled pipeline, the rendered overlays,
the images and the KFP server release must agree with each other.

No cluster runs where this runs, so each side is read through the real interface it
meets in a cluster: the compiled IR through the pipeline-spec and kfp-kubernetes protos
of the KFP release `scripts/install-kfp.sh` installs (unknown fields refused, as the
server refuses them), the manifests as `kubectl kustomize` renders them, the images as
the docker workflow builds them. (The proto parse itself lives with the rest of the
code that imports kfp: `kfp_pipelines.runner.proto_problems`.) Every check returns a
list of problems, sentences naming what disagrees, empty when all is well.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from cartridge.deploy.images import PIPELINE_IMAGE_NAME, TRAINING_IMAGE_NAME, split_reference

INSTALL_SCRIPT = Path("scripts/install-kfp.sh")
DOCKER_WORKFLOW = Path(".github/workflows/docker.yml")
KFP_NAMESPACE = "kubeflow"
# Packages whose protos the KFP server shares: the server of a release understands
# exactly what that release's protos describe.
SERVER_PROTO_PACKAGES = ("kfp-pipeline-spec", "kfp-kubernetes")
# Memory a container may use beyond the largest resident size measured under load.
MEMORY_HEADROOM = 1.5


def pinned_kfp_version(root: Path) -> str:
    """The KFP server release the install script pins (`PIPELINE_VERSION=`)."""
    text = (root / INSTALL_SCRIPT).read_text()
    found = re.findall(r"^PIPELINE_VERSION=([0-9][0-9A-Za-z.+-]*)\s*$", text, re.MULTILINE)
    if len(found) != 1:
        raise ValueError(f"{INSTALL_SCRIPT} must set PIPELINE_VERSION exactly once")
    return found[0]


def server_proto_problems(server_version: str) -> list[str]:
    """The installed proto packages must be the server release's own: only then does
    parsing with them say what that server accepts."""
    problems = []
    for package in SERVER_PROTO_PACKAGES:
        installed = metadata.version(package)
        if installed != server_version:
            problems.append(
                f"the KFP server pinned in {INSTALL_SCRIPT} is {server_version} but the SDK "
                f"compiles with {package} {installed}: pin the server to the SDK's release"
            )
    return problems


@dataclass(frozen=True)
class CompiledPipeline:
    spec: dict
    kubernetes: dict  # executor name -> KubernetesExecutorConfig as JSON

    @classmethod
    def read(cls, path: Path) -> CompiledPipeline:
        return cls.parse(Path(path).read_text())

    @classmethod
    def parse(cls, text: str) -> CompiledPipeline:
        documents = [d for d in yaml.safe_load_all(text) if d]
        platform = documents[1] if len(documents) > 1 else {}
        executors = (
            platform.get("platforms", {})
            .get("kubernetes", {})
            .get("deploymentSpec", {})
            .get("executors", {})
        )
        return cls(documents[0], executors)

    @property
    def images(self) -> dict[str, str]:
        """Executor name -> container image."""
        executors = self.spec["deploymentSpec"]["executors"]
        return {name: e["container"]["image"] for name, e in executors.items()}

    def tasks_calling(self, component: str) -> list[dict]:
        """Every task, in the root DAG or a component's (loops, conditions), that runs
        `component` (e.g. `comp-train`; unrolled iterations call `comp-train-2` too)."""
        dags = [
            self.spec["root"]["dag"],
            *(c.get("dag", {}) for c in self.spec["components"].values()),
        ]
        return [
            task
            for dag in dags
            for task in dag.get("tasks", {}).values()
            if task["componentRef"]["name"] == component
        ]

    def secrets(self) -> dict[str, set[str]]:
        """Secret name -> keys the steps read from it."""
        wanted: dict[str, set[str]] = {}
        for config in self.kubernetes.values():
            for entry in config.get("secretAsEnv", []):
                name = entry.get("secretName") or (
                    entry.get("secretNameParameter", {}).get("runtimeValue", {}).get("constant")
                )
                keys = {pair["secretKey"] for pair in entry.get("keyToEnv", [])}
                wanted.setdefault(name, set()).update(keys)
        return wanted


def step_of(executor: str) -> str:
    """The step an executor runs: `exec-train-2` (iteration 2's copy) runs `train`."""
    return re.sub(r"^exec-|-\d+$", "", executor)


def step_timeout_problems(path: Path, wanted: dict[str, int]) -> list[str]:
    """Every executor has a pod deadline: the one `wanted` sets for its step."""
    compiled = CompiledPipeline.read(path)
    problems = []
    for name in sorted(compiled.images):
        step = step_of(name)
        seconds = int(compiled.kubernetes.get(name, {}).get("activeDeadlineSeconds", 0))
        if seconds <= 0:
            problems.append(f"{name}: no timeout (activeDeadlineSeconds)")
        elif step in wanted and seconds != wanted[step]:
            problems.append(f"{name}: timeout {seconds} s, expected {wanted[step]} s")
    return problems


class Render:
    """One overlay as `kubectl kustomize` renders it."""

    def __init__(self, path: Path):
        self.name = Path(path).stem
        self.objects = [d for d in yaml.safe_load_all(Path(path).read_text()) if d]

    def of_kind(self, *kinds: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] in kinds]

    def find(self, kind: str, name: str, namespace: str) -> dict | None:
        for o in self.of_kind(kind):
            if o["metadata"]["name"] == name and o["metadata"].get("namespace") == namespace:
                return o
        return None

    def secret_keys(self, name: str, namespace: str) -> set[str] | None:
        """Keys of the Secret `name` as delivered (a Secret, or an ExternalSecret's
        target); None when nothing delivers it."""
        secret = self.find("Secret", name, namespace)
        if secret is not None:
            return set(secret.get("data", {})) | set(secret.get("stringData", {}))
        for external in self.of_kind("ExternalSecret"):
            spec = external["spec"]
            target = spec.get("target", {}).get("name", external["metadata"]["name"])
            if target == name and external["metadata"].get("namespace") == namespace:
                return {entry["secretKey"] for entry in spec.get("data", [])}
        return None

    def pod_templates(self) -> dict[str, dict]:
        templates = {
            o["metadata"]["name"]: o["spec"]["template"]
            for o in self.of_kind("Deployment", "StatefulSet", "Job")
        }
        for cron in self.of_kind("CronJob"):
            templates[cron["metadata"]["name"]] = cron["spec"]["jobTemplate"]["spec"]["template"]
        return templates

    def port_number(self, labels: dict, port: int | str) -> int | None:
        """The container port number that `port` (a number or a port's name) is in the
        pods a selector's `labels` pick; None when they have no such port (or the
        selector is empty, which picks no pods for a Service)."""
        if not labels:
            return None
        for template in self.pod_templates().values():
            if not selects({"matchLabels": labels}, template["metadata"].get("labels", {})):
                continue
            for container in template["spec"]["containers"]:
                for entry in container.get("ports", []):
                    if port in (entry["containerPort"], entry.get("name")):
                        return entry["containerPort"]
        return None

    def images(self) -> set[str]:
        return {
            container["image"]
            for template in self.pod_templates().values()
            for container in template["spec"]["containers"]
            + template["spec"].get("initContainers", [])
        }

    def container(self, workload: str, container: str) -> dict | None:
        template = self.pod_templates().get(workload)
        if template is None:
            return None
        for candidate in template["spec"]["containers"]:
            if candidate["name"] == container:
                return candidate
        return None


def selects(selector: dict, labels: dict) -> bool:
    """Whether a label selector (matchLabels and matchExpressions) picks `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        held = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }
        if not held[operator]:
            return False
    return True


def admits(render: Render, pod_labels: dict, namespace: str, port: int) -> bool:
    """Whether a NetworkPolicy selecting the pods admits traffic from `namespace` to
    `port` (the overlays deny all ingress by default)."""
    for policy in render.of_kind("NetworkPolicy"):
        if not selects(policy["spec"].get("podSelector", {}), pod_labels):
            continue
        for rule in policy["spec"].get("ingress", []):
            sources = [
                source.get("namespaceSelector", {}).get("matchLabels", {})
                for source in rule.get("from", [])
            ]
            if {"kubernetes.io/metadata.name": namespace} not in sources:
                continue
            if any(entry.get("port") == port for entry in rule.get("ports", [])):
                return True
    return False


def pod_reaches(render: Render, client: dict, target: dict, port: int) -> bool:
    """Whether pods labelled `client` may open `port` on pods labelled `target` in the
    same namespace: an egress rule of the client's policies and an ingress rule of the
    target's both name the other side's labels and the port."""

    def allowed(direction: str, side: dict, other: dict) -> bool:
        peers = "to" if direction == "egress" else "from"
        for policy in render.of_kind("NetworkPolicy"):
            if not selects(policy["spec"].get("podSelector", {}), side):
                continue
            for rule in policy["spec"].get(direction, []):
                named = any(
                    "podSelector" in peer and selects(peer["podSelector"], other)
                    for peer in rule.get(peers, [])
                )
                if named and any(entry.get("port") == port for entry in rule.get("ports", [])):
                    return True
        return False

    return allowed("egress", client, target) and allowed("ingress", target, client)


def service_problems(render: Render, url: str, client_namespace: str) -> list[str]:
    """`url` (http://NAME.NAMESPACE.svc:PORT, as a pipeline parameter default) reaches a
    Service port whose pods listen there and whose NetworkPolicy admits the client."""
    parts = urlsplit(url if "://" in url else f"tcp://{url}")
    host, port = parts.hostname or "", parts.port
    labels = host.split(".")
    if len(labels) < 3 or labels[2] != "svc" or port is None:
        return [f"{url}: not an in-cluster service address (NAME.NAMESPACE.svc:PORT)"]
    name, namespace = labels[0], labels[1]
    where = f"{render.name}: {url}"
    service = render.find("Service", name, namespace)
    if service is None:
        return [f"{where}: no Service {namespace}/{name}"]
    matching = [p for p in service["spec"]["ports"] if p["port"] == port]
    if not matching:
        return [f"{where}: Service {name} has no port {port}"]
    selector = service["spec"].get("selector", {})
    target = matching[0].get("targetPort", port)
    number = render.port_number(selector, target)
    problems = []
    if number is None:
        problems.append(f"{where}: targetPort {target} is no container port of {selector}")
        number = port  # still say whether the policy would admit the Service's port
    if not admits(render, selector, client_namespace, number):
        problems.append(f"{where}: no NetworkPolicy admits {client_namespace} on port {number}")
    return problems


def image_problems(render: Render, pipeline: CompiledPipeline, built: Iterable[str]) -> list[str]:
    """The pipeline's images are the overlay's cartridge release: same version, the
    CPU image for the steps and the CUDA image for training, both built by the docker
    workflow; every image of ours the overlay deploys is built there too."""
    built = set(built)
    problems = []
    ours = {}
    for image in render.images():
        repository, tag, digest = split_reference(image)
        short = repository.rsplit("/", 1)[-1]
        if short.startswith(PIPELINE_IMAGE_NAME):
            ours[short] = tag or digest
            if short not in built:
                problems.append(f"{render.name}: deploys {image}, which no workflow builds")
    release = ours.get(PIPELINE_IMAGE_NAME)
    if release is None:
        return [*problems, f"{render.name}: deploys no {PIPELINE_IMAGE_NAME} image"]
    for executor, image in sorted(pipeline.images.items()):
        repository, tag, digest = split_reference(image)
        short = repository.rsplit("/", 1)[-1]
        wanted = TRAINING_IMAGE_NAME if executor.startswith("exec-train") else PIPELINE_IMAGE_NAME
        if short != wanted:
            problems.append(f"{executor} runs on {image}; expected the {wanted} image")
        if short not in built:
            problems.append(f"{executor} runs on {image}, which no workflow builds")
        if digest is None and tag != release:
            problems.append(
                f"{render.name}: {executor} runs {image} but the overlay deploys "
                f"{PIPELINE_IMAGE_NAME}:{release}"
            )
    return problems


def secret_problems(render: Render, pipeline: CompiledPipeline) -> list[str]:
    problems = []
    for name, keys in sorted(pipeline.secrets().items()):
        delivered = render.secret_keys(name, KFP_NAMESPACE)
        if delivered is None:
            problems.append(
                f"{render.name}: the pipeline's Secret {name} is not in {KFP_NAMESPACE}"
            )
        elif missing := keys - delivered:
            problems.append(f"{render.name}: Secret {name} lacks {', '.join(sorted(missing))}")
    return problems


def workload_problems(render: Render) -> list[str]:
    """Every ServiceAccount, Secret key and ConfigMap a pod names is delivered."""
    accounts = {o["metadata"]["name"] for o in render.of_kind("ServiceAccount")}
    configmaps = {o["metadata"]["name"] for o in render.of_kind("ConfigMap")}
    problems = []
    for workload, template in sorted(render.pod_templates().items()):
        spec = template["spec"]
        namespace = "cartridge"
        account = spec.get("serviceAccountName")
        if account and account not in accounts:
            problems.append(f"{render.name}: {workload} runs as missing ServiceAccount {account}")
        for container in spec["containers"] + spec.get("initContainers", []):
            for variable in container.get("env", []):
                source = variable.get("valueFrom", {})
                if ref := source.get("secretKeyRef"):
                    keys = render.secret_keys(ref["name"], namespace)
                    if keys is None or ref["key"] not in keys:
                        problems.append(
                            f"{render.name}: {workload} reads {ref['name']}/{ref['key']}, "
                            "which is not delivered"
                        )
                if (ref := source.get("configMapKeyRef")) and ref["name"] not in configmaps:
                    problems.append(f"{render.name}: {workload} reads missing {ref['name']}")
        for volume in spec.get("volumes", []):
            if (ref := volume.get("configMap")) and ref["name"] not in configmaps:
                problems.append(f"{render.name}: {workload} mounts missing {ref['name']}")
    return problems


def scrape_problems(render: Render, monitoring_namespace: str = "monitoring") -> list[str]:
    """Every PodMonitor names a port its pods have, which the monitoring namespace may
    reach."""
    problems = []
    for monitor in render.of_kind("PodMonitor"):
        name = monitor["metadata"]["name"]
        selector = monitor["spec"]["selector"].get("matchLabels", {})
        for endpoint in monitor["spec"]["podMetricsEndpoints"]:
            number = render.port_number(selector, endpoint["port"])
            if number is None:
                problems.append(f"{render.name}: PodMonitor {name} scrapes port "
                                f"{endpoint['port']!r}, which its pods do not have")  # fmt: skip
            elif not admits(render, selector, monitoring_namespace, number):
                problems.append(
                    f"{render.name}: PodMonitor {name}: no NetworkPolicy admits "
                    f"{monitoring_namespace} on port {number}"
                )
    return problems


def memory_mib(quantity: str) -> float:
    """A Kubernetes memory quantity in MiB."""
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "K": 1e3 / 2**20, "M": 1e6 / 2**20}
    units["G"] = 1e9 / 2**20
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    if not match:
        raise ValueError(f"unreadable memory quantity {quantity!r}")
    number, unit = match.groups()
    return float(number) * (units[unit] if unit else 1 / 2**20)


def memory_problems(render: Render, workload: str, container: str, measured_mib: float):
    """The container's memory limit covers the measured resident size with headroom,
    and its request covers the measured size itself."""
    found = render.container(workload, container)
    if found is None:
        return [f"{render.name}: no container {workload}/{container}"]
    resources = found.get("resources", {})
    limit = resources.get("limits", {}).get("memory")
    request = resources.get("requests", {}).get("memory")
    problems = []
    if limit is None or memory_mib(limit) < measured_mib * MEMORY_HEADROOM:
        problems.append(
            f"{render.name}: {workload} memory limit {limit} is under {MEMORY_HEADROOM}x the "
            f"{measured_mib:.0f} MiB measured under load"
        )
    if request is None or memory_mib(request) < measured_mib:
        problems.append(
            f"{render.name}: {workload} memory request {request} is under the "
            f"{measured_mib:.0f} MiB measured under load"
        )
    return problems


def built_images(root: Path) -> set[str]:
    """Names of the images the docker workflow builds (its matrix)."""
    workflow = yaml.safe_load((root / DOCKER_WORKFLOW).read_text())
    return {
        entry["name"]
        for job in workflow["jobs"].values()
        for entry in job.get("strategy", {}).get("matrix", {}).get("include", [])
    }


def cluster_problems(root: Path, pipeline_path: Path, renders: Iterable[Path]) -> list[str]:
    """Everything the pipeline needs from each overlay, and what the overlays' own pods
    need from themselves."""
    from cartridge.settings import Endpoints

    pipeline = CompiledPipeline.read(pipeline_path)
    built = built_images(root)
    defaults = Endpoints()
    pipeline_services = [defaults.mlflow_tracking_uri, defaults.s3_endpoint, defaults.triton_url]
    # Self-play on Triton, as docs/DEPLOY.md shows it.
    pipeline_services.append(re.sub(r":\d+$", ":8001", defaults.triton_url))
    problems = []
    for path in renders:
        render = Render(path)
        problems += image_problems(render, pipeline, built)
        problems += secret_problems(render, pipeline)
        problems += workload_problems(render)
        problems += scrape_problems(render)
        for url in pipeline_services:
            problems += service_problems(render, url, KFP_NAMESPACE)
    return list(dict.fromkeys(problems))  # what is wrong in every overlay, said once
