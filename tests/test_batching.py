"""The batching evaluator: concurrent callers share calls and each gets its own rows."""

import threading

import numpy as np
import pytest

from cartridge.evaluators.batching import BatchingEvaluator
from cartridge.evaluators.onnx_model import OnnxEvaluator
from cartridge.games import load


class RecordingEvaluator:
    """A real onnxruntime evaluator that records the batch size of every call."""

    def __init__(self, inner):
        self.inner = inner
        self.game = inner.game
        self.sizes = []
        self.last_version = "7"

    def evaluate(self, planes):
        self.sizes.append(len(planes))
        return self.inner.evaluate(planes)


def test_concurrent_callers_get_their_own_rows(onnx_models):
    game = load("connect4")
    direct = OnnxEvaluator(game, onnx_models["connect4"][0])
    recording = RecordingEvaluator(direct)
    batching = BatchingEvaluator(recording, max_batch=64, dispatchers=2)
    rng = np.random.default_rng(0)
    inputs = [(rng.random((16, 2, 6, 7)) > 0.5).astype(np.float32) for _ in range(32)]
    results = [None] * len(inputs)
    versions = [None] * len(inputs)
    start = threading.Barrier(len(inputs))

    def call(i):
        start.wait()
        for _ in range(5):
            results[i] = batching.evaluate(inputs[i])
        versions[i] = batching.last_version

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for planes, (logits, values) in zip(inputs, results, strict=True):
        expected_logits, expected_values = direct.evaluate(planes)
        np.testing.assert_allclose(logits, expected_logits, atol=1e-6)
        np.testing.assert_allclose(values, expected_values, atol=1e-6)
    assert versions == ["7"] * len(inputs)
    assert sum(recording.sizes) == 32 * 16 * 5
    assert max(recording.sizes) <= 64 and len(recording.sizes) < 32 * 5  # calls were merged
    batching.close()
    assert not any(thread.is_alive() for thread in batching._threads)  # every dispatcher


class FlakyEvaluator(RecordingEvaluator):
    """Fails its calls while `down` is set, as a server that went away would."""

    down = False

    def evaluate(self, planes):
        if self.down:
            raise ConnectionError("server went away")
        return super().evaluate(planes)


def test_errors_reach_every_caller_and_bad_input_stays_with_its_caller(onnx_models):
    game = load("tictactoe")
    flaky = FlakyEvaluator(OnnxEvaluator(game, onnx_models["tictactoe"][0]))
    batching = BatchingEvaluator(flaky)
    with pytest.raises(ValueError, match="expected planes"):
        batching.evaluate(np.zeros((3, 2, 4, 4), np.float32))
    assert flaky.sizes == []  # rejected before it could join anyone's batch
    flaky.down = True
    failures = []

    def call():
        try:
            batching.evaluate(np.zeros((2, 2, 3, 3), np.float32))
        except ConnectionError as error:
            failures.append(error)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(failures) == 8
    flaky.down = False
    logits, values = batching.evaluate(np.zeros((3, 2, 3, 3), np.float32))  # serving again
    assert logits.shape == (3, 9) and values.shape == (3,)
    batching.close()
    with pytest.raises(ValueError, match="at least 1"):
        BatchingEvaluator(flaky, max_batch=0)
