"""Weights and serving artifacts from the real S3 (SeaweedFS through the minio SDK)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from safetensors.torch import save_file

from histoprompt.core import names
from histoprompt.core.s3 import make_minio
from histoprompt.export.bundle import build_demo_bundle, demo_card, demo_config
from histoprompt.export.encoders import build_architecture, load_encoder
from histoprompt.export.errors import WeightsError
from histoprompt.export.model_repo import Flavor, render
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration


def test_encoder_weights_load_from_s3(stack: StackHandle, tmp_path: Path) -> None:
    state = build_architecture("tiny", seed=11).state_dict()
    save_file(state, str(tmp_path / "tiny.safetensors"))
    client = make_minio(stack.settings)
    bucket = stack.settings.models_bucket
    client.fput_object(bucket, "weights/test/tiny.safetensors", str(tmp_path / "tiny.safetensors"))
    loaded = load_encoder(
        "tiny", f"s3://{bucket}/weights/test/tiny.safetensors", settings=stack.settings
    )
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), build_architecture("tiny", seed=11)(x))
    with pytest.raises(WeightsError, match="cannot fetch weights"):
        load_encoder(
            "tiny", f"s3://{bucket}/weights/test/absent.safetensors", settings=stack.settings
        )


def test_model_reads_its_onnx_from_artifact_uri(stack: StackHandle, tmp_path: Path) -> None:
    bundle = build_demo_bundle(tmp_path / "demo", seed=0)
    client = make_minio(stack.settings)
    bucket = stack.settings.models_bucket
    prefix = f"artifacts/{bundle.card.version}/slide_embed/"
    client.fput_object(bucket, prefix + "model.onnx", str(bundle.bundle_dir / "slide_embed.onnx"))

    name = "slide_embed_from_s3"
    text = render(demo_card(demo_config()), Flavor.cpu).configs[names.MODEL_SLIDE_EMBED]
    text = text.replace(f'name: "{names.MODEL_SLIDE_EMBED}"', f'name: "{name}"')
    text += (
        'parameters {\n  key: "artifact_uri"\n'
        f'  value: {{ string_value: "s3://{bucket}/{prefix}" }}\n}}\n'
    )
    target = stack.model_repository / name
    if target.exists():
        shutil.rmtree(target)
    (target / "1").mkdir(parents=True)
    (target / "config.pbtxt").write_text(text)
    model_py = bundle.model_repository / names.MODEL_SLIDE_EMBED / "1" / "model.py"
    shutil.copy(model_py, target / "1" / "model.py")

    triton = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        triton.load_model(name)
        bag = np.random.default_rng(3).standard_normal((20, 192)).astype(np.float32)
        inp = grpcclient.InferInput(names.TENSOR_TILE_EMBEDDING, list(bag.shape), "FP32")
        inp.set_data_from_numpy(bag)
        got = triton.infer(name, [inp]).as_numpy(names.TENSOR_SLIDE_EMBEDDING)
        triton.unload_model(name)
    finally:
        triton.close()
    import onnxruntime as ort

    sess = ort.InferenceSession(
        str(bundle.bundle_dir / "slide_embed.onnx"), providers=["CPUExecutionProvider"]
    )
    np.testing.assert_allclose(
        got, sess.run(None, {names.TENSOR_TILE_EMBEDDING: bag})[0], atol=1e-6
    )
