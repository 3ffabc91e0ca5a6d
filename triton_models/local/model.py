"""Triton python-backend model that runs a cartridge ONNX network with onnxruntime.

The local stack's Triton (from the nvidia-pytriton wheel) ships only the python backend,
so this file stands in for the native ONNX Runtime backend that the cluster uses. Tensor
names and shapes are the same in both configs, so clients cannot tell them apart.

Dynamic batching hands `execute` several requests at once; they are concatenated into
one onnxruntime call, which is where batching pays, and the outputs split back.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

INPUT = "planes"
OUTPUTS = ("policy_logits", "value")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = config.get("parameters", {})
        threads = int(parameters.get("intra_op_threads", {}).get("string_value", "1"))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # Idle pool threads would spin between batches, taking the cores the clients of
        # this server (the web app's searches) need to produce the next batch.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        batches = [pb_utils.get_input_tensor_by_name(r, INPUT).as_numpy() for r in requests]
        sizes = [len(batch) for batch in batches]
        planes = batches[0] if len(batches) == 1 else np.concatenate(batches)
        logits, values = self.session.run(list(OUTPUTS), {INPUT: planes})
        values = values.reshape(-1)
        responses = []
        start = 0
        for size in sizes:
            end = start + size
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(OUTPUTS[0], logits[start:end]),
                        pb_utils.Tensor(OUTPUTS[1], values[start:end]),
                    ]
                )
            )
            start = end
        return responses
