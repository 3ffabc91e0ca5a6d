"""onnxruntime evaluator for exported policy-value networks."""

from pathlib import Path

import numpy as np
import onnxruntime as ort

from cartridge.evaluators.base import check_planes
from cartridge.games import Game
from cartridge.model_metadata import (
    INPUT_NAME,
    OUTPUT_NAMES,
    VALUE_DISCOUNT_KEY,
    parse_value_discount,
)


class OnnxEvaluator:
    """Runs an ONNX model with inputs `planes` and outputs `policy_logits`, `value`.

    `threads` sets onnxruntime's intra-op threads; one thread per self-play worker
    is the efficient choice when workers already fill the cores. `value_discount` is
    the per-ply discount the model's values were trained with (from the file's
    metadata; 1 for files exported before it was recorded there).
    """

    def __init__(self, game: Game, path: str | Path, threads: int = 1):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model {path} does not exist")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        try:
            self.session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ValueError(f"{path} is not a loadable ONNX model: {error}") from error
        self.game = game
        self.path = path
        self._check_signature()
        metadata = self.session.get_modelmeta().custom_metadata_map
        self.value_discount = parse_value_discount(
            metadata.get(VALUE_DISCOUNT_KEY), f"{path} metadata"
        )

    def _check_signature(self) -> None:
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if INPUT_NAME not in inputs or not set(OUTPUT_NAMES) <= set(outputs):
            raise ValueError(
                f"{self.path} must take '{INPUT_NAME}' and return "
                f"{', '.join(OUTPUT_NAMES)}; it has inputs {sorted(inputs)} "
                f"and outputs {sorted(outputs)}"
            )
        if list(inputs[INPUT_NAME][1:]) != list(self.game.planes_shape):
            raise ValueError(
                f"{self.path} expects planes {inputs[INPUT_NAME]}, but "
                f"{self.game.name} positions are {list(self.game.planes_shape)}"
            )
        policy_shape = outputs["policy_logits"]
        if policy_shape[-1] != self.game.num_actions:
            raise ValueError(
                f"{self.path} outputs {policy_shape[-1]} policy logits; "
                f"{self.game.name} has {self.game.num_actions} actions"
            )

    def evaluate(self, planes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        planes = check_planes(planes, self.game.planes_shape)
        logits, values = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: planes})
        return logits, values.reshape(-1)
