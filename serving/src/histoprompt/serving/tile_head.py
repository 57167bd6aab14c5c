"""Handler of `tile_head`: the ST-trained tile-level head (`histoprompt-export spatial-train`).

`TILE_EMBEDDING` FP32 [B, D] -> `SCORES` FP32 [B, K] and `GENE_SETS` BYTES [B, K] (the K set
names in column order, from `tile_head.json`, repeated per row so batched requests split
cleanly). Optional by design: without `tile_head.onnx` in the version folder the model still
loads and every request is refused with a one-line hint, so a repository without an ST head
stays healthy.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from histoprompt.core import names
from histoprompt.serving.context import ModelContext
from histoprompt.serving.errors import ModelConfigError, RequestError
from histoprompt.serving.onnx_runner import OnnxRunner
from histoprompt.serving.tensors import check_tensor

__all__ = ["HEAD_JSON", "HEAD_ONNX", "TileHead"]

HEAD_ONNX = "tile_head.onnx"
HEAD_JSON = "tile_head.json"
NOT_INSTALLED = (
    "no ST-trained tile head is installed: run `histoprompt-export spatial-train --out BUNDLE` "
    "then `histoprompt-export model-repo --artifacts BUNDLE`"
)


class TileHead:
    batched: ClassVar[bool] = True
    inputs: ClassVar[tuple[str, ...]] = (names.TENSOR_TILE_EMBEDDING,)
    outputs: ClassVar[tuple[str, ...]] = (names.TENSOR_SCORES, names.TENSOR_GENE_SETS)

    def __init__(self, ctx: ModelContext) -> None:
        folder = ctx.artifact_dir()
        self.runner: OnnxRunner | None = None
        self.sets: list[str] = []
        if (folder / HEAD_ONNX).is_file():
            try:
                doc = json.loads((folder / HEAD_JSON).read_text())
                self.sets = [str(s) for s in doc["gene_sets"]]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ModelConfigError(f"{ctx.name}: {HEAD_JSON} unusable: {err}") from err
            self.runner = OnnxRunner(folder / HEAD_ONNX, ctx.int_param("intra_op_threads", 0))
        dims = [int(d) for d in ctx.config["input"][0]["dims"]]
        self.width = dims[-1]

    def check(self, inputs: dict[str, NDArray[Any] | None]) -> dict[str, NDArray[Any] | None]:
        if self.runner is None:
            raise RequestError(NOT_INSTALLED)
        name = names.TENSOR_TILE_EMBEDDING
        array = check_tensor(name, inputs.get(name), dtype=np.float32, shape=(None, self.width))
        return {name: array}

    def run(self, inputs: dict[str, NDArray[Any] | None]) -> dict[str, NDArray[Any]]:
        array = inputs[names.TENSOR_TILE_EMBEDDING]
        if self.runner is None or array is None:
            raise RequestError(NOT_INSTALLED)
        scores = next(iter(self.runner.run(np.ascontiguousarray(array)).values()))
        labels = np.array([s.encode() for s in self.sets], dtype=np.object_)
        return {
            names.TENSOR_SCORES: scores.astype(np.float32, copy=False),
            names.TENSOR_GENE_SETS: np.tile(labels, (len(scores), 1)),
        }
