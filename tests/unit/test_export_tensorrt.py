"""TensorRT FP16 builder: runs on a GPU node with tensorrt, skips cleanly elsewhere."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from histoprompt.export.errors import OptionalDependencyError
from histoprompt.export.tensorrt_build import build_engine, import_tensorrt, run_engine

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_missing_tensorrt_says_what_to_install() -> None:
    with pytest.raises(OptionalDependencyError, match=r"histoprompt-export\[gpu\]"):
        import_tensorrt()


@pytest.mark.gpu
@pytest.mark.skipif(not (HAS_TRT and torch.cuda.is_available()), reason="needs GPU + tensorrt")
def test_fp16_plan_matches_torch(tmp_path: Path) -> None:
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.onnx_export import export_tile_encoder

    enc = load_encoder("tiny")
    export_tile_encoder(enc.module, 64, tmp_path / "t.onnx")
    plan = build_engine(
        tmp_path / "t.onnx",
        tmp_path / "model.plan",
        input_name="PIXELS",
        row_shape=(3, 64, 64),
        max_batch=256,
    )
    x = np.random.default_rng(0).standard_normal((64, 3, 64, 64)).astype(np.float32)
    got = run_engine(plan, x, "PIXELS")
    with torch.no_grad():
        ref = enc.module(torch.from_numpy(x)).numpy()
    cos = (got * ref).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.min() >= 0.999  # FP16 engine: cosine, not the fp32 abs tolerance
