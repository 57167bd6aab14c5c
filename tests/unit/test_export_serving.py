"""Serving handlers and the Triton adapter, with a stand-in for triton_python_backend_utils."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from helpers.tiny_model import served_config, tiny_card

from histoprompt.core import names
from histoprompt.export.encoder_specs import encoder_spec
from histoprompt.export.encoders import load_encoder
from histoprompt.export.model_repo import Flavor, parse_config, render
from histoprompt.export.onnx_export import export_tile_encoder
from histoprompt.serving.context import ModelContext
from histoprompt.serving.errors import ModelConfigError, RequestError
from histoprompt.serving.handlers import PathwayQuery, TileEncoder, TilePreprocess
from histoprompt.serving.onnx_runner import OnnxRunner
from histoprompt.serving.preprocess import preprocess_tiles, resize_bilinear
from histoprompt.serving.triton_adapter import TritonModelBase


def _ctx(model: str, version_dir: Path) -> ModelContext:
    return ModelContext.from_config(served_config(tiny_card(), model), version_dir, model)


class _FakeTensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, array

    def as_numpy(self) -> np.ndarray:
        return self._array

    def name(self) -> str:
        return self._name


class _FakeError:
    INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

    def __init__(self, message: str, code: str) -> None:
        self.message, self.code = message, code


class _FakeResponse:
    def __init__(
        self, output_tensors: list[_FakeTensor] | None = None, error: _FakeError | None = None
    ) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in (output_tensors or [])}
        self.error = error


class _ModelException(Exception):
    pass


FAKE_PB = types.SimpleNamespace(
    Tensor=_FakeTensor,
    InferenceResponse=_FakeResponse,
    TritonError=_FakeError,
    TritonModelException=_ModelException,
    get_input_tensor_by_name=lambda req, name: (
        _FakeTensor(name, req[name]) if name in req else None
    ),
)


def _adapter(model: str, version_dir: Path) -> TritonModelBase:
    import json

    from google.protobuf import json_format

    cfg = json_format.MessageToDict(
        parse_config(render(tiny_card(), Flavor.cpu).configs[model]),
        preserving_proto_field_name=True,
    )
    cls = type("M", (TritonModelBase,), {"model_name": model, "pb": FAKE_PB})
    inst = cls()
    inst.initialize(
        {
            "model_config": json.dumps(cfg),
            "model_repository": str(version_dir.parent),
            "model_version": version_dir.name,
            "model_name": model,
        }
    )
    return inst


def test_resize_matches_torch_bilinear() -> None:
    x = np.random.default_rng(0).uniform(0, 1, (2, 37, 37, 3)).astype(np.float32)
    ours = resize_bilinear(x, 24)
    ref = (
        torch.nn.functional.interpolate(
            torch.from_numpy(x).permute(0, 3, 1, 2),
            size=(24, 24),
            mode="bilinear",
            align_corners=False,
        )
        .permute(0, 2, 3, 1)
        .numpy()
    )
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_preprocess_normalises_per_channel() -> None:
    spec = encoder_spec("tiny")
    tiles = np.full((1, 64, 64, 3), 255, dtype=np.uint8)
    pixels = preprocess_tiles(tiles, spec)
    assert pixels.shape == (1, 3, 64, 64) and pixels.dtype == np.float32
    np.testing.assert_allclose(
        pixels[0, :, 0, 0], (1 - np.array(spec.mean)) / np.array(spec.std), rtol=1e-6
    )


def test_tile_preprocess_reads_the_encoder_spec_from_config(tmp_path: Path) -> None:
    handler = TilePreprocess(_ctx(names.MODEL_TILE_PREPROCESS, tmp_path))
    assert handler.spec == encoder_spec("tiny")
    with pytest.raises(RequestError, match="must be uint8"):
        handler.check({"TILES": np.zeros((1, 64, 64, 3), np.float32)})
    with pytest.raises(RequestError, match="rank 4"):
        handler.check({"TILES": np.zeros((64, 64, 3), np.uint8)})
    with pytest.raises(RequestError, match="dim 3 must be 3"):
        handler.check({"TILES": np.zeros((1, 64, 64, 4), np.uint8)})


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    version = tmp_path_factory.mktemp("tile_encoder") / "1"
    version.mkdir()
    export_tile_encoder(load_encoder("tiny").module, 64, version / "model.onnx")
    return version


def test_adapter_batches_requests_and_isolates_bad_ones(encoder_dir: Path) -> None:
    model = _adapter(names.MODEL_TILE_ENCODER, encoder_dir)
    rng = np.random.default_rng(0)
    good1 = rng.integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    good2 = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    bad_dtype = good1.astype(np.float32)
    bad_size = np.zeros((2, 4, 4, 3), np.uint8)
    responses = model.execute(
        [{"TILES": good1}, {"TILES": bad_dtype}, {"TILES": good2}, {"TILES": bad_size}, {}]
    )
    enc = load_encoder("tiny").module
    for resp, x in ((responses[0], good1), (responses[2], good2)):
        assert resp.error is None
        with torch.no_grad():
            ref = enc(torch.from_numpy(preprocess_tiles(x, encoder_spec("tiny")))).numpy()
        np.testing.assert_allclose(resp.outputs["TILE_EMBEDDING"], ref, atol=1e-4)
    assert responses[1].error.code == "INVALID_ARG" and "uint8" in responses[1].error.message
    assert responses[3].error.code == "INVALID_ARG" and "at least 8x8" in (
        responses[3].error.message
    )
    assert responses[4].error.code == "INVALID_ARG" and "missing" in responses[4].error.message
    # the instance keeps serving after bad input
    again = model.execute([{"TILES": good1}])
    assert again[0].error is None


@pytest.mark.parametrize("tile_px", [64, 96, 256])
def test_one_step_tile_encoder_equals_the_two_step_path(encoder_dir: Path, tile_px: int) -> None:
    """cpu patch_embed is one step (tile_encoder preprocesses, issue 15); its embeddings equal
    the two-step path's (tile_preprocess's PIXELS into the same ONNX graph) within 1e-6, for
    tiles at the encoder's size, resized, and integer-reduced, batched across requests."""
    fused = _adapter(names.MODEL_TILE_ENCODER, encoder_dir)
    preprocess = _adapter(names.MODEL_TILE_PREPROCESS, encoder_dir)
    runner = OnnxRunner(encoder_dir / "model.onnx")
    rng = np.random.default_rng(tile_px)
    requests = [
        {"TILES": rng.integers(0, 256, (n, tile_px, tile_px, 3), dtype=np.uint8)} for n in (7, 9)
    ]
    got = fused.execute(requests)
    pixels = preprocess.execute(requests)
    for one, two, request in zip(got, pixels, requests, strict=True):
        assert one.error is None and two.error is None
        assert two.outputs["PIXELS"].dtype == np.float32
        ref = runner.run(np.ascontiguousarray(two.outputs["PIXELS"]))["TILE_EMBEDDING"]
        assert one.outputs["TILE_EMBEDDING"].shape == (len(request["TILES"]), 192)
        np.testing.assert_allclose(one.outputs["TILE_EMBEDDING"], ref, atol=1e-6, rtol=0)


def test_missing_artifact_fails_the_model_at_load(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    with pytest.raises(_ModelException, match="artifact model.onnx not found"):
        _adapter(names.MODEL_TILE_ENCODER, tmp_path / "1")


def test_onnx_shape_must_match_the_config(encoder_dir: Path) -> None:
    ctx = _ctx(names.MODEL_TILE_ENCODER, encoder_dir)
    bad = dict(ctx.config)
    # the cpu tile_encoder takes TILES: its ONNX input edge is the spec's input_px
    bad["parameters"] = {**ctx.config["parameters"], "input_px": {"string_value": "32"}}
    with pytest.raises(ModelConfigError, match="does not match"):
        TileEncoder(ModelContext.from_config(bad, encoder_dir, "tile_encoder"))


def test_a_tile_encoder_from_an_older_repository_says_to_regenerate_it(
    encoder_dir: Path,
) -> None:
    ctx = _ctx(names.MODEL_TILE_ENCODER, encoder_dir)
    old = dict(ctx.config)
    # before the one-step cpu patch_embed: no encoder parameters on tile_encoder
    keep = ("model_version", "onnx_file", "intra_op_threads", "synthetic")
    old["parameters"] = {k: v for k, v in ctx.config["parameters"].items() if k in keep}
    with pytest.raises(ModelConfigError, match="regenerate the repository"):
        TileEncoder(ModelContext.from_config(old, encoder_dir, "tile_encoder"))


class _Engine:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def query(self, emb: np.ndarray, sets: list[str], method: str | None) -> tuple[Any, ...]:
        if "NOPE" in sets:
            raise KeyError("unknown gene set NOPE")
        self.calls.append((emb.shape, sets, method))
        return np.ones((emb.shape[0], len(sets)), np.float64), np.full(len(sets), 0.5), {}


def test_pathway_query_wraps_the_engine(tmp_path: Path) -> None:
    engine = _Engine()
    handler = PathwayQuery(_ctx(names.MODEL_PATHWAY_QUERY, tmp_path), engine=engine)
    inputs = handler.check(
        {
            "SLIDE_EMBEDDING": np.zeros((2, 8), np.float32),
            "GENE_SETS": np.array([b"HALLMARK_HYPOXIA", b'{"name":"x","genes":["A"]}'], object),
            "METHOD": np.array([b"soft_knn"], object),
        }
    )
    out = handler.run(inputs)
    assert out["SCORES"].dtype == np.float32 and out["SCORES"].shape == (2, 2)
    assert out["COVERAGE"].shape == (2,)
    assert engine.calls[0][1][0] == "HALLMARK_HYPOXIA" and engine.calls[0][2] == "soft_knn"
    with pytest.raises(RequestError, match="NOPE"):
        handler.run({**inputs, "GENE_SETS": np.array([b"NOPE"], object)})
    with pytest.raises(RequestError, match="dim 1 must be 8"):
        handler.check({**inputs, "SLIDE_EMBEDDING": np.zeros((1, 9), np.float32)})
