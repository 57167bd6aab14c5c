"""The demo bundle served by the real local Triton (cpu flavour): numbers match torch over
gRPC, the EncoderSpec is readable from tile_preprocess's config, bad input gets INVALID_ARG
and the instance keeps serving."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from histoprompt.core import names
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.export.bundle import DemoBundle, build_demo_bundle
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration

NET_MODELS = (
    names.MODEL_TILE_PREPROCESS,
    names.MODEL_TILE_ENCODER,
    names.MODEL_PATCH_EMBED,
    names.MODEL_SLIDE_EMBED,
    names.MODEL_RNA_EMBED,
)


@pytest.fixture(scope="module")
def demo(stack: StackHandle, tmp_path_factory: pytest.TempPathFactory) -> DemoBundle:
    out = tmp_path_factory.mktemp("demo")
    bundle = build_demo_bundle(out, seed=0, repo_dir=stack.model_repository)
    client = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        for model in NET_MODELS:
            client.load_model(model)
    finally:
        client.close()
    return bundle


@pytest.fixture
def client(stack: StackHandle, demo: DemoBundle) -> Iterator[grpcclient.InferenceServerClient]:
    c = grpcclient.InferenceServerClient(stack.triton_grpc)
    yield c
    c.close()


def _infer(
    c: grpcclient.InferenceServerClient,
    model: str,
    name: str,
    x: np.ndarray,
    dtype: str,
    outputs: list[str],
) -> list[np.ndarray]:
    inp = grpcclient.InferInput(name, list(x.shape), dtype)
    inp.set_data_from_numpy(x)
    result = c.infer(model, [inp], outputs=[grpcclient.InferRequestedOutput(o) for o in outputs])
    return [result.as_numpy(o) for o in outputs]


def _patch_embed(c: grpcclient.InferenceServerClient, tiles: np.ndarray) -> np.ndarray:
    model, out = names.MODEL_PATCH_EMBED, names.TENSOR_TILE_EMBEDDING
    return _infer(c, model, names.TENSOR_TILES, tiles, "UINT8", [out])[0]


def _close(got: np.ndarray, ref: np.ndarray) -> None:
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=0)
    a, b = got.reshape(got.shape[0], -1), ref.reshape(ref.shape[0], -1)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.min() >= 0.9999


def test_encoder_spec_and_version_are_readable_from_triton(
    client: grpcclient.InferenceServerClient, demo: DemoBundle
) -> None:
    cfg = client.get_model_config(names.MODEL_TILE_PREPROCESS, as_json=True)["config"]
    params = {k: v["string_value"] for k, v in cfg["parameters"].items()}
    spec = EncoderSpec(
        name=params["encoder"],
        tile_px=int(params["tile_px"]),
        input_px=int(params["input_px"]),
        target_mpp=float(params["target_mpp"]),
        mean=tuple(json.loads(params["mean"])),
        std=tuple(json.loads(params["std"])),
        embed_dim=int(params["embed_dim"]),
        untrained=params["untrained"] == "true",
    )
    assert spec == demo.card.encoder
    assert params["model_version"] == demo.card.version


def test_patch_embed_matches_torch(
    client: grpcclient.InferenceServerClient, demo: DemoBundle
) -> None:
    from histoprompt.export.embedding import embed_tiles
    from histoprompt.export.encoders import load_encoder

    tiles = np.random.default_rng(0).integers(0, 256, (64, 64, 64, 3), dtype=np.uint8)
    got = _patch_embed(client, tiles)
    ref = embed_tiles(load_encoder("tiny", seed=0), tiles)
    assert got.shape == (64, demo.card.encoder.embed_dim)
    _close(got, ref)


def test_one_step_patch_embed_equals_the_two_step_path(
    client: grpcclient.InferenceServerClient, stack: StackHandle, demo: DemoBundle
) -> None:
    """cpu patch_embed is one step (tile_encoder preprocesses, issue 15); it equals the two-step
    path, the served tile_preprocess's PIXELS into the same ONNX graph, within 1e-6."""
    from histoprompt.serving.onnx_runner import OnnxRunner

    cfg = client.get_model_config(names.MODEL_PATCH_EMBED, as_json=True)["config"]
    steps = [s["model_name"] for s in cfg["ensemble_scheduling"]["step"]]
    assert steps == [names.MODEL_TILE_ENCODER]
    tiles = np.random.default_rng(3).integers(0, 256, (40, 96, 96, 3), dtype=np.uint8)
    got = _patch_embed(client, tiles)
    (pixels,) = _infer(
        client,
        names.MODEL_TILE_PREPROCESS,
        names.TENSOR_TILES,
        tiles,
        "UINT8",
        [names.TENSOR_PIXELS],
    )
    onnx = stack.model_repository / names.MODEL_TILE_ENCODER / "1" / "model.onnx"
    ref = OnnxRunner(onnx).run(pixels)[names.TENSOR_TILE_EMBEDDING]
    assert got.shape == (40, demo.card.encoder.embed_dim)
    np.testing.assert_allclose(got, ref, atol=1e-6, rtol=0)


def test_slide_and_rna_embed_match_torch(
    client: grpcclient.InferenceServerClient, demo: DemoBundle
) -> None:
    from histoprompt.export.alignment import SlideEmbedExport
    from histoprompt.export.alignment_training import load_alignment

    model = load_alignment(demo.bundle_dir / "alignment")
    bag = np.random.default_rng(1).standard_normal((123, 192)).astype(np.float32)
    emb, att = _infer(
        client,
        names.MODEL_SLIDE_EMBED,
        names.TENSOR_TILE_EMBEDDING,
        bag,
        "FP32",
        [names.TENSOR_SLIDE_EMBEDDING, names.TENSOR_ATTENTION],
    )
    with torch.no_grad():
        ref_emb, ref_att = SlideEmbedExport(model)(torch.from_numpy(bag))
    assert emb.shape == (1, demo.card.aligned_dim) and att.shape == (123,)
    _close(emb, ref_emb.numpy())
    np.testing.assert_allclose(att, ref_att.numpy(), atol=1e-5)
    assert np.linalg.norm(emb) == pytest.approx(1.0, abs=1e-5)

    expr = np.random.default_rng(2).uniform(0, 8, (4, demo.card.rna_genes)).astype(np.float32)
    (rna,) = _infer(
        client,
        names.MODEL_RNA_EMBED,
        names.TENSOR_EXPRESSION,
        expr,
        "FP32",
        [names.TENSOR_RNA_EMBEDDING],
    )
    import onnxruntime as ort

    sess = ort.InferenceSession(
        str(demo.bundle_dir / "rna_embed.onnx"), providers=["CPUExecutionProvider"]
    )
    _close(rna, sess.run(None, {names.TENSOR_EXPRESSION: expr})[0])


def _expect_invalid(fn: object, match: str) -> None:
    with pytest.raises(InferenceServerException) as info:
        fn()  # type: ignore[operator]
    assert "INVALID_ARG" in str(info.value.status())
    assert match in str(info.value)


def test_bad_input_is_invalid_arg_and_the_model_keeps_serving(
    client: grpcclient.InferenceServerClient,
) -> None:
    tiles = np.zeros((2, 64, 64, 3), np.uint8)
    # wrong dtype and wrong rank: refused against the config
    _expect_invalid(
        lambda: _infer(
            client,
            names.MODEL_PATCH_EMBED,
            names.TENSOR_TILES,
            tiles.astype(np.float32),
            "FP32",
            [names.TENSOR_TILE_EMBEDDING],
        ),
        "TILES",
    )
    _expect_invalid(
        lambda: _infer(
            client,
            names.MODEL_SLIDE_EMBED,
            names.TENSOR_TILE_EMBEDDING,
            np.zeros((5, 7), np.float32),
            "FP32",
            [names.TENSOR_SLIDE_EMBEDDING],
        ),
        "TILE_EMBEDDING",
    )
    # content the config cannot express: refused by the model itself, per request
    _expect_invalid(
        lambda: _infer(
            client,
            names.MODEL_PATCH_EMBED,
            names.TENSOR_TILES,
            np.zeros((2, 4, 4, 3), np.uint8),
            "UINT8",
            [names.TENSOR_TILE_EMBEDDING],
        ),
        "at least 8x8",
    )
    nan_bag = np.full((3, 192), np.nan, np.float32)
    _expect_invalid(
        lambda: _infer(
            client,
            names.MODEL_SLIDE_EMBED,
            names.TENSOR_TILE_EMBEDDING,
            nan_bag,
            "FP32",
            [names.TENSOR_SLIDE_EMBEDDING],
        ),
        "NaN",
    )
    # the instances still serve
    (out,) = _infer(
        client,
        names.MODEL_PATCH_EMBED,
        names.TENSOR_TILES,
        tiles,
        "UINT8",
        [names.TENSOR_TILE_EMBEDDING],
    )
    assert out.shape == (2, 192) and np.isfinite(out).all()
    assert client.is_model_ready(names.MODEL_SLIDE_EMBED)


def test_slide_to_pathways_answers(
    client: grpcclient.InferenceServerClient, demo: DemoBundle
) -> None:
    client.load_model(names.MODEL_PATHWAY_QUERY)
    client.load_model(names.MODEL_SLIDE_TO_PATHWAYS)
    bag = np.random.default_rng(4).standard_normal((50, 192)).astype(np.float32)
    emb_in = grpcclient.InferInput(names.TENSOR_TILE_EMBEDDING, list(bag.shape), "FP32")
    emb_in.set_data_from_numpy(bag)
    sets = np.array([b"HALLMARK_HYPOXIA", b"HALLMARK_G2M_CHECKPOINT"], dtype=object)
    sets_in = grpcclient.InferInput(names.TENSOR_GENE_SETS, [2], "BYTES")
    sets_in.set_data_from_numpy(sets)
    result = client.infer(names.MODEL_SLIDE_TO_PATHWAYS, [emb_in, sets_in])
    assert result.as_numpy(names.TENSOR_SCORES).shape == (1, 2)
    assert result.as_numpy(names.TENSOR_COVERAGE).shape == (2,)
    assert np.isfinite(result.as_numpy(names.TENSOR_SCORES)).all()


def test_pathway_query_methods_and_bad_gene_sets(
    client: grpcclient.InferenceServerClient, demo: DemoBundle
) -> None:
    client.load_model(names.MODEL_PATHWAY_QUERY)
    emb = np.random.default_rng(5).standard_normal((2, demo.card.aligned_dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)

    def query(sets: list[bytes], method: bytes | None) -> grpcclient.InferResult:
        inputs = [
            grpcclient.InferInput(names.TENSOR_SLIDE_EMBEDDING, list(emb.shape), "FP32"),
            grpcclient.InferInput(names.TENSOR_GENE_SETS, [len(sets)], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(emb)
        inputs[1].set_data_from_numpy(np.array(sets, dtype=object))
        if method is not None:
            m = grpcclient.InferInput(names.TENSOR_METHOD, [1], "BYTES")
            m.set_data_from_numpy(np.array([method], dtype=object))
            inputs.append(m)
        return client.infer(names.MODEL_PATHWAY_QUERY, inputs)

    for method in (b"soft_knn", b"prototype"):
        scores = query([b"HALLMARK_HYPOXIA", b"HALLMARK_E2F_TARGETS"], method).as_numpy(
            names.TENSOR_SCORES
        )
        assert scores.shape == (2, 2) and np.isfinite(scores).all()
    _expect_invalid(lambda: query([b"HALLMARK_NOT_A_SET"], None), "HALLMARK_NOT_A_SET")
    _expect_invalid(lambda: query([b"HALLMARK_HYPOXIA"], b"astrology"), "astrology")
    assert query([b"HALLMARK_HYPOXIA"], None).as_numpy(names.TENSOR_SCORES).shape == (2, 1)


def test_demo_step_serves_every_model(stack: StackHandle, demo: DemoBundle) -> None:
    import io

    from rich.console import Console

    from histoprompt.export.demo_step import SERVED, serve_models

    buffer = io.StringIO()
    serve_models(stack, Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert demo.card.version in text and "SYNTHETIC" in text
    c = grpcclient.InferenceServerClient(stack.triton_grpc)
    try:
        assert all(c.is_model_ready(m) for m in SERVED)
    finally:
        c.close()
