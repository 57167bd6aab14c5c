"""Triton ModelConfig messages, one builder per model of docs/architecture.md (section 5).

Built as protobuf messages (Triton's own schema), never as text: a misspelt field fails here,
not when Triton loads the repository. model_repo prints them and writes the files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tritonclient.grpc import model_config_pb2 as pb

from histoprompt.core import names
from histoprompt.core.modelspec import MAX_TILE_BATCH, ModelCard
from histoprompt.core.pathway_engine import DEFAULT_METHOD
from histoprompt.core.triton_params import encoder_spec_to_params

MAX_BATCH_RNA = 64
PREFERRED_TILE_BATCHES = (64, 128, MAX_TILE_BATCH)
PREFERRED_RNA_BATCHES = (8, 32)
# Queue delays (µs): short on cpu, where a batch is compute-bound anyway; longer on gpu to
# fill the preferred batches.
CPU_TILE_DELAY_US = 100
GPU_TILE_DELAY_US = 2000
RNA_DELAY_US = 1000
# Intermediate tensor of the gpu flavour's patch_embed between its two steps.
PREPROCESSED = "preprocessed_pixels"

Config = Any  # model_config_pb2.ModelConfig; tritonclient ships no type stubs


class Flavor(StrEnum):
    cpu = "cpu"
    gpu = "gpu"


class TileEncoderPlatform(StrEnum):
    tensorrt = "tensorrt_plan"
    onnx = "onnxruntime_onnx"


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # a Triton DataType name, e.g. TYPE_FP32
    dims: tuple[int, ...]
    optional: bool = False


def _config(
    name: str,
    *,
    backend: str = "",
    platform: str = "",
    max_batch: int = 0,
    inputs: tuple[Tensor, ...] = (),
    outputs: tuple[Tensor, ...] = (),
    params: Mapping[str, str] | None = None,
) -> Config:
    cfg = pb.ModelConfig(name=name, backend=backend, platform=platform, max_batch_size=max_batch)
    for t in inputs:
        cfg.input.add(
            name=t.name, data_type=pb.DataType.Value(t.dtype), dims=t.dims, optional=t.optional
        )
    for t in outputs:
        cfg.output.add(name=t.name, data_type=pb.DataType.Value(t.dtype), dims=t.dims)
    for key, value in (params or {}).items():
        cfg.parameters[key].string_value = value
    return cfg


def _batching(cfg: Config, preferred: tuple[int, ...], delay_us: int) -> Config:
    cfg.dynamic_batching.preferred_batch_size.extend(preferred)
    cfg.dynamic_batching.max_queue_delay_microseconds = delay_us
    return cfg


def _instances(cfg: Config, gpu: bool, count: int = 1) -> Config:
    kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    cfg.instance_group.add(count=count, kind=kind)
    return cfg


def _ensemble(cfg: Config, steps: list[tuple[str, dict[str, str], dict[str, str]]]) -> Config:
    for model, inputs, outputs in steps:
        cfg.ensemble_scheduling.step.add(
            model_name=model, model_version=-1, input_map=inputs, output_map=outputs
        )
    return cfg


def common_params(card: ModelCard) -> dict[str, str]:
    """Parameters of every model: the version stamped into results, the synthetic flag."""
    return {"model_version": card.version, "synthetic": str(card.synthetic).lower()}


def _onnx_python_params(card: ModelCard) -> dict[str, str]:
    # cpu flavour: the python backend runs the ONNX file with ONNX Runtime.
    return {**common_params(card), "onnx_file": "model.onnx", "intra_op_threads": "0"}


def _pixels(card: ModelCard) -> Tensor:
    s = card.encoder.input_px
    return Tensor(names.TENSOR_PIXELS, "TYPE_FP32", (3, s, s))


def _tiles() -> Tensor:
    return Tensor(names.TENSOR_TILES, "TYPE_UINT8", (-1, -1, 3))


def _tile_embedding(card: ModelCard, per_slide: bool = False) -> Tensor:
    d = card.encoder.embed_dim
    return Tensor(names.TENSOR_TILE_EMBEDDING, "TYPE_FP32", (-1, d) if per_slide else (d,))


def _slide_outputs(card: ModelCard) -> tuple[Tensor, Tensor]:
    return (
        Tensor(names.TENSOR_SLIDE_EMBEDDING, "TYPE_FP32", (1, card.aligned_dim)),
        Tensor(names.TENSOR_ATTENTION, "TYPE_FP32", (-1,)),
    )


def _score_outputs() -> tuple[Tensor, Tensor]:
    return (
        Tensor(names.TENSOR_SCORES, "TYPE_FP32", (-1, -1)),
        Tensor(names.TENSOR_COVERAGE, "TYPE_FP32", (-1,)),
    )


def tile_preprocess(card: ModelCard, flavor: Flavor) -> Config:
    """Python in both flavours; its parameters carry the EncoderSpec to serving and ingest.

    On gpu it is patch_embed's first step; on cpu it is loaded for its config (ingest reads
    the spec there) and serves TILES -> PIXELS on its own, off the patch_embed path."""
    gpu = flavor is Flavor.gpu
    cfg = _config(
        names.MODEL_TILE_PREPROCESS,
        backend="python",
        max_batch=MAX_TILE_BATCH,
        inputs=(_tiles(),),
        outputs=(_pixels(card),),
        params={**common_params(card), **encoder_spec_to_params(card.encoder)},
    )
    _batching(cfg, PREFERRED_TILE_BATCHES, GPU_TILE_DELAY_US if gpu else CPU_TILE_DELAY_US)
    # Always on CPU; on gpu nodes two instances keep the encoder fed.
    return _instances(cfg, gpu=False, count=2 if gpu else 1)


def tile_encoder(card: ModelCard, flavor: Flavor, platform: TileEncoderPlatform) -> Config:
    """TensorRT plan or ONNX on gpu (PIXELS in); on cpu the python backend takes TILES and
    runs tile_preprocess's preprocessing then ONNX Runtime (patch_embed is one step)."""
    gpu = flavor is Flavor.gpu
    io: dict[str, Any] = {"max_batch": MAX_TILE_BATCH, "outputs": (_tile_embedding(card),)}
    if gpu:
        cfg = _config(
            names.MODEL_TILE_ENCODER,
            platform=platform.value,
            params=common_params(card),
            inputs=(_pixels(card),),
            **io,
        )
        cfg.default_model_filename = (
            "model.plan" if platform is TileEncoderPlatform.tensorrt else "model.onnx"
        )
    else:
        params = {**_onnx_python_params(card), **encoder_spec_to_params(card.encoder)}
        cfg = _config(
            names.MODEL_TILE_ENCODER, backend="python", params=params, inputs=(_tiles(),), **io
        )
    _batching(cfg, PREFERRED_TILE_BATCHES, GPU_TILE_DELAY_US if gpu else CPU_TILE_DELAY_US)
    return _instances(cfg, gpu=gpu)


def patch_embed(card: ModelCard, flavor: Flavor) -> Config:
    """Ensemble TILES -> tile_preprocess -> tile_encoder -> TILE_EMBEDDING on gpu, where the
    plan needs float input; on cpu one step, TILES -> tile_encoder (it preprocesses)."""
    cfg = _config(
        names.MODEL_PATCH_EMBED,
        platform="ensemble",
        max_batch=MAX_TILE_BATCH,
        inputs=(_tiles(),),
        outputs=(_tile_embedding(card),),
        params=common_params(card),
    )
    tiles, pixels, emb = names.TENSOR_TILES, names.TENSOR_PIXELS, names.TENSOR_TILE_EMBEDDING
    if flavor is Flavor.cpu:
        return _ensemble(cfg, [(names.MODEL_TILE_ENCODER, {tiles: tiles}, {emb: emb})])
    return _ensemble(
        cfg,
        [
            (names.MODEL_TILE_PREPROCESS, {tiles: tiles}, {pixels: PREPROCESSED}),
            (names.MODEL_TILE_ENCODER, {pixels: PREPROCESSED}, {emb: emb}),
        ],
    )


def _onnx_model(
    card: ModelCard,
    flavor: Flavor,
    name: str,
    max_batch: int,
    inputs: tuple[Tensor, ...],
    outputs: tuple[Tensor, ...],
) -> Config:
    gpu = flavor is Flavor.gpu
    io: dict[str, Any] = {"max_batch": max_batch, "inputs": inputs, "outputs": outputs}
    if gpu:
        cfg = _config(name, platform="onnxruntime_onnx", params=common_params(card), **io)
        cfg.default_model_filename = "model.onnx"
    else:
        cfg = _config(name, backend="python", params=_onnx_python_params(card), **io)
    if max_batch:
        _batching(cfg, PREFERRED_RNA_BATCHES, RNA_DELAY_US)
    return _instances(cfg, gpu=gpu)


def slide_embed(card: ModelCard, flavor: Flavor) -> Config:
    """One slide per request: no batching axis, the tile count is the first dim."""
    return _onnx_model(
        card,
        flavor,
        names.MODEL_SLIDE_EMBED,
        0,
        (_tile_embedding(card, per_slide=True),),
        _slide_outputs(card),
    )


def rna_embed(card: ModelCard, flavor: Flavor) -> Config:
    """Expression profiles [G] -> aligned embeddings [E], batched."""
    return _onnx_model(
        card,
        flavor,
        names.MODEL_RNA_EMBED,
        MAX_BATCH_RNA,
        (Tensor(names.TENSOR_EXPRESSION, "TYPE_FP32", (card.rna_genes,)),),
        (Tensor(names.TENSOR_RNA_EMBEDDING, "TYPE_FP32", (card.aligned_dim,)),),
    )


def _readable_outputs() -> tuple[Tensor, ...]:
    """PERCENTILE and ZSCORE [B, K]: each score against the reference's scores of its set."""
    return tuple(Tensor(t, "TYPE_FP32", (-1, -1)) for t in names.READABLE_OUTPUTS)


def pathway_query(card: ModelCard, reference_uri: str) -> Config:
    """Python in both flavours, wraps histoprompt.core.pathway_engine."""
    cfg = _config(
        names.MODEL_PATHWAY_QUERY,
        backend="python",
        inputs=(
            Tensor(names.TENSOR_SLIDE_EMBEDDING, "TYPE_FP32", (-1, card.aligned_dim)),
            Tensor(names.TENSOR_GENE_SETS, "TYPE_STRING", (-1,)),
            Tensor(names.TENSOR_METHOD, "TYPE_STRING", (1,), optional=True),
        ),
        outputs=(*_score_outputs(), *_readable_outputs()),
        params={
            **common_params(card),
            "reference_uri": reference_uri,
            "default_method": DEFAULT_METHOD,
        },
    )
    return _instances(cfg, gpu=False)


def slide_to_pathways(card: ModelCard) -> Config:
    """Ensemble TILE_EMBEDDING -> slide_embed -> pathway_query."""
    cfg = _config(
        names.MODEL_SLIDE_TO_PATHWAYS,
        platform="ensemble",
        inputs=(
            _tile_embedding(card, per_slide=True),
            Tensor(names.TENSOR_GENE_SETS, "TYPE_STRING", (-1,)),
        ),
        outputs=(*_slide_outputs(card), *_score_outputs(), *_readable_outputs()),
        params=common_params(card),
    )
    emb, slide, att = (
        names.TENSOR_TILE_EMBEDDING,
        names.TENSOR_SLIDE_EMBEDDING,
        names.TENSOR_ATTENTION,
    )
    sets, scores, cov = names.TENSOR_GENE_SETS, names.TENSOR_SCORES, names.TENSOR_COVERAGE
    query_out = {scores: scores, cov: cov, **{t: t for t in names.READABLE_OUTPUTS}}
    return _ensemble(
        cfg,
        [
            (names.MODEL_SLIDE_EMBED, {emb: emb}, {slide: slide, att: att}),
            (names.MODEL_PATHWAY_QUERY, {slide: slide, sets: sets}, query_out),
        ],
    )


def tile_context(card: ModelCard, flavor: Flavor) -> Config:
    """Tile-level method `context`: 3 x 3 neighbourhood bags [9, D] -> [E], batched."""
    from histoprompt.core.tile_context import CONTEXT_ROWS

    cfg = _onnx_model(
        card,
        flavor,
        names.MODEL_TILE_CONTEXT,
        MAX_TILE_BATCH,
        (
            Tensor(
                names.TENSOR_TILE_NEIGHBOURHOOD,
                "TYPE_FP32",
                (CONTEXT_ROWS, card.encoder.embed_dim),
            ),
        ),
        (Tensor(names.TENSOR_TILE_ALIGNED, "TYPE_FP32", (card.aligned_dim,)),),
    )
    cfg.dynamic_batching.Clear()
    gpu = flavor is Flavor.gpu
    return _batching(cfg, PREFERRED_TILE_BATCHES, GPU_TILE_DELAY_US if gpu else CPU_TILE_DELAY_US)


def tile_head(card: ModelCard) -> Config:
    """The ST-trained head (optional artifact): TILE_EMBEDDING [D] -> SCORES, GENE_SETS [K]."""
    cfg = _config(
        names.MODEL_TILE_HEAD,
        backend="python",
        max_batch=MAX_TILE_BATCH,
        inputs=(_tile_embedding(card),),
        outputs=(
            Tensor(names.TENSOR_SCORES, "TYPE_FP32", (-1,)),
            Tensor(names.TENSOR_GENE_SETS, "TYPE_STRING", (-1,)),
        ),
        params={**common_params(card), "intra_op_threads": "0"},
    )
    _batching(cfg, PREFERRED_TILE_BATCHES, CPU_TILE_DELAY_US)
    return _instances(cfg, gpu=False)


def model_configs(
    card: ModelCard, flavor: Flavor, tile_platform: TileEncoderPlatform, reference_uri: str
) -> dict[str, Config]:
    """Every model's config, keyed by model name, in names.ALL_MODELS order."""
    return {
        names.MODEL_TILE_PREPROCESS: tile_preprocess(card, flavor),
        names.MODEL_TILE_ENCODER: tile_encoder(card, flavor, tile_platform),
        names.MODEL_PATCH_EMBED: patch_embed(card, flavor),
        names.MODEL_SLIDE_EMBED: slide_embed(card, flavor),
        names.MODEL_RNA_EMBED: rna_embed(card, flavor),
        names.MODEL_PATHWAY_QUERY: pathway_query(card, reference_uri),
        names.MODEL_SLIDE_TO_PATHWAYS: slide_to_pathways(card),
        names.MODEL_TILE_CONTEXT: tile_context(card, flavor),
        names.MODEL_TILE_HEAD: tile_head(card),
    }
