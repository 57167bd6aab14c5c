"""UNTRAINED stand-in for `rna_embed` (EXPRESSION [-1,G] -> RNA_EMBEDDING [-1,E]): a fixed-seed
linear map, so the test can recompute the expected embeddings outside Triton."""

import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config["parameters"].items()}
        n_genes, dim, seed = (int(params[k]) for k in ("n_genes", "embed_dim", "seed"))
        rng = np.random.default_rng(seed)
        self.weights = (rng.normal(size=(n_genes, dim)) / np.sqrt(n_genes)).astype(np.float32)

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "EXPRESSION").as_numpy()
            y = (x.astype(np.float32) @ self.weights).astype(np.float32)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("RNA_EMBEDDING", y)]))
        return responses
