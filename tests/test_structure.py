"""The package's shape: who may import whom, and facts that must agree across files."""

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from cartridge.games import GAME_NAMES, describe
from cartridge.model_metadata import INPUT_NAME, OUTPUT_NAMES
from cartridge.names import triton_model_name

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "cartridge"
TRITON_MODELS = REPO / "triton_models"


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _unit(module: str) -> str | None:
    """The folder (or top-level module) of `cartridge` a module belongs to."""
    parts = module.split(".")
    if parts[0] != "cartridge" or len(parts) < 2:
        return None
    if (PACKAGE / parts[1]).is_dir() or (PACKAGE / f"{parts[1]}.py").exists():
        return parts[1]
    return None  # a name imported from the package's __init__


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        relative = path.relative_to(PACKAGE)
        unit = relative.parts[0].removesuffix(".py")
        targets = {_unit(m) for m in _imports(path)} - {None, unit}
        graph.setdefault(unit, set()).update(targets)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the path around it; None when there is none."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node, path):
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state:
                found = visit(target, [*path, target])
                if found:
                    return found
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [node])
            if found:
                return found
    return None


def test_no_import_cycle_between_folders_and_modules():
    graph = import_graph()
    assert {"serving", "evaluators", "promotion", "arena", "loop", "settings"} <= set(graph)
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_only_the_pipeline_shell_imports_kfp():
    importers = sorted(
        str(path.relative_to(REPO))
        for path in PACKAGE.rglob("*.py")
        if any(m == "kfp" or m.startswith("kfp.") for m in _imports(path))
    )
    assert importers == []


def test_the_web_app_and_the_triton_evaluator_load_no_torch():
    """The web pods' memory limit is sized for a process without torch (~390 MiB with)."""
    modules = (
        "cartridge.web.app",
        "cartridge.serving.bot",
        "cartridge.serving.lineage",
        "cartridge.serving.triton",
        "cartridge.evaluators.triton_model",
        "cartridge.evaluators.batching",
        "cartridge.tracking",
    )
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "from cartridge.web import create_app\n"
        "create_app()\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def _configs():
    for folder in (TRITON_MODELS, TRITON_MODELS / "local"):
        for game_name in GAME_NAMES:
            yield folder / triton_model_name(game_name) / "config.pbtxt", game_name


@pytest.mark.parametrize(
    "path, game_name", list(_configs()), ids=lambda v: str(v).rsplit("triton_models/")[-1]
)
def test_triton_configs_match_the_game(path, game_name):
    """Every config parses as Triton's own ModelConfig (unknown fields refused) and
    names the tensors and shapes the game's exported models have."""
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    game = describe(game_name)
    assert config.name == triton_model_name(game_name)
    assert config.max_batch_size > 0  # dims below leave the batch axis out
    assert [(i.name, list(i.dims)) for i in config.input] == [(INPUT_NAME, list(game.planes_shape))]
    assert [(o.name, list(o.dims)) for o in config.output] == [
        (OUTPUT_NAMES[0], [game.num_actions]),
        (OUTPUT_NAMES[1], [1]),
    ]
    value = config.output[1]
    assert value.HasField("reshape") and list(value.reshape.shape) == []  # a [B] tensor
    assert all(t.data_type == model_config_pb2.TYPE_FP32 for t in (*config.input, *config.output))
    if path.parent.parent == TRITON_MODELS:  # the cluster's configs warm the model up
        warmups = list(config.model_warmup)
        assert {w.batch_size for w in warmups} == {1, 64}
        for warmup in warmups:
            assert warmup.batch_size <= config.max_batch_size
            [(name, tensor)] = warmup.inputs.items()
            assert (name, list(tensor.dims)) == (INPUT_NAME, list(game.planes_shape))
            assert tensor.data_type == model_config_pb2.TYPE_FP32 and tensor.zero_data


def test_a_wrong_dim_is_caught(tmp_path):
    path, game_name = next(_configs())
    broken = tmp_path / "config.pbtxt"
    broken.write_text(path.read_text().replace("dims: [ 9 ]", "dims: [ 10 ]", 1))
    with pytest.raises(AssertionError):
        test_triton_configs_match_the_game(broken, game_name)


def _pins(text: str) -> dict[str, str]:
    return {
        name.lower().replace("_", "-"): version
        for name, version in re.findall(r'^"?\s*([A-Za-z0-9_.-]+)==([^" \\;]+)', text, re.M)
    }


@pytest.mark.parametrize(
    "lock, extras", [("requirements.lock", ()), ("requirements-dev.lock", ("dev", "stack"))]
)
def test_lock_files_hold_every_pin_of_pyproject(lock, extras):
    """make and the images install from the lock files: a pin changed in pyproject.toml
    without `make lock` would never reach them."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"]]
    for extra in extras:
        wanted += project["optional-dependencies"][extra]
    locked = _pins((REPO / lock).read_text())
    assert "torch" not in locked  # CPU and CUDA builds are different files
    assert "nvidia-pytriton" not in locked or "stack" in extras  # not in the images
    for requirement in wanted:
        name, version = requirement.split("==")
        name = name.split("[")[0]  # the lock lists packages, not extras
        if name != "torch":
            assert locked.get(name.lower()) == version, f"{lock}: {name} is not at {version}"
    hashed = (REPO / lock).read_text().count("--hash=sha256:")
    assert hashed >= len(locked)
