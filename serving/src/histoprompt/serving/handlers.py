"""The logic of each served model, independent of Triton.

A handler validates one request's inputs (`check`, raising RequestError) and computes
outputs (`run`). Batched handlers may receive several requests' rows concatenated along
dim 0; `rows` tells the adapter how to split the result back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

from histoprompt.core import names
from histoprompt.core.errors import InvalidInputError
from histoprompt.core.modelspec import EncoderSpec
from histoprompt.core.triton_params import EncoderParamsError, encoder_spec_from_params
from histoprompt.serving.context import ModelContext
from histoprompt.serving.errors import ModelConfigError, RequestError
from histoprompt.serving.onnx_runner import OnnxRunner
from histoprompt.serving.preprocess import preprocess_tiles
from histoprompt.serving.tensors import check_tensor
from histoprompt.serving.tile_head import TileHead

Inputs = dict[str, NDArray[Any] | None]
Outputs = dict[str, NDArray[Any]]


class Handler(Protocol):
    batched: ClassVar[bool]
    inputs: ClassVar[tuple[str, ...]]
    outputs: ClassVar[tuple[str, ...]]

    def check(self, inputs: Inputs) -> Inputs: ...

    def run(self, inputs: Inputs) -> Outputs: ...


def _fixed_dims(ctx: ModelContext, tensor: str, *, inputs: bool = True) -> list[int]:
    for item in ctx.config.get("input" if inputs else "output", []):
        if item.get("name") == tensor:
            return [int(d) for d in item.get("dims", [])]
    raise ModelConfigError(f"{ctx.name}: tensor {tensor} missing from the config")


def _encoder_spec(ctx: ModelContext) -> EncoderSpec:
    try:
        return encoder_spec_from_params(ctx.parameters)
    except EncoderParamsError as err:
        raise ModelConfigError(f"{ctx.name}: {err}") from err


def _check_tiles(inputs: Inputs) -> Inputs:
    tiles = check_tensor(
        names.TENSOR_TILES,
        inputs.get(names.TENSOR_TILES),
        dtype=np.uint8,
        shape=(None, None, None, 3),
    )
    if tiles.shape[1] < 8 or tiles.shape[2] < 8:
        raise RequestError(f"TILES must be at least 8x8 pixels, got shape {tiles.shape}")
    return {names.TENSOR_TILES: tiles}


class TilePreprocess:
    batched = True
    inputs = (names.TENSOR_TILES,)
    outputs = (names.TENSOR_PIXELS,)

    def __init__(self, ctx: ModelContext) -> None:
        self.spec = _encoder_spec(ctx)
        self.dtype = ctx.output_dtype(names.TENSOR_PIXELS)

    def check(self, inputs: Inputs) -> Inputs:
        return _check_tiles(inputs)

    def run(self, inputs: Inputs) -> Outputs:
        tiles = inputs[names.TENSOR_TILES]
        assert tiles is not None
        pixels = preprocess_tiles(tiles, self.spec)
        # copy=False: the float32 flavour hands the array on as is (no extra pass).
        return {names.TENSOR_PIXELS: pixels.astype(self.dtype, copy=False)}


class _OnnxHandler:
    """A batched handler whose single input goes straight into an ONNX model."""

    batched: ClassVar[bool] = True
    inputs: ClassVar[tuple[str, ...]] = ()
    outputs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: ModelContext) -> None:
        self.runner = OnnxRunner(
            ctx.artifact(ctx.param("onnx_file", "model.onnx")),
            intra_op_threads=ctx.int_param("intra_op_threads", 0),
        )
        self.shape = self._onnx_input_shape(ctx)
        onnx_shape = self.runner.input_shape
        if len(onnx_shape) != len(self.shape) or any(
            a is not None and b is not None and a != b
            for a, b in zip(onnx_shape, self.shape, strict=False)
        ):
            raise ModelConfigError(
                f"{ctx.name}: ONNX input shape {onnx_shape} does not match the config "
                f"shape {self.shape}"
            )
        self.dtypes = {o: ctx.output_dtype(o) for o in self.outputs}

    def _onnx_input_shape(self, ctx: ModelContext) -> tuple[int | None, ...]:
        """The ONNX input's shape as the config declares it (None: any size)."""
        dims = [None if d < 0 else d for d in _fixed_dims(ctx, self.inputs[0])]
        # Batched models: config dims exclude the batch axis; unbatched: they are the shape.
        return tuple([None, *dims] if self.batched else dims)

    def check(self, inputs: Inputs) -> Inputs:
        name = self.inputs[0]
        array = check_tensor(name, inputs.get(name), dtype=np.float32, shape=self.shape)
        return {name: array}

    def run(self, inputs: Inputs) -> Outputs:
        array = inputs[self.inputs[0]]
        assert array is not None
        return self._encode(array)

    def _encode(self, array: NDArray[Any]) -> Outputs:
        outs = self.runner.run(np.ascontiguousarray(array))
        return {o: outs[o].astype(self.dtypes[o], copy=False) for o in self.outputs}


class TileEncoder(_OnnxHandler):
    """cpu flavour: TILES uint8 -> preprocess_tiles -> ONNX Runtime -> TILE_EMBEDDING.

    Preprocessing runs in this stub, so patch_embed is one ensemble step: no float32 PIXELS
    tensor (4x the uint8 bytes) copied between two python stubs, one stub round trip instead
    of two. The gpu flavour's tile_encoder is a TensorRT/ONNX model fed by tile_preprocess.
    """

    inputs = (names.TENSOR_TILES,)
    outputs = (names.TENSOR_TILE_EMBEDDING,)

    def __init__(self, ctx: ModelContext) -> None:
        try:
            self.spec = _encoder_spec(ctx)
        except ModelConfigError as err:
            # A repository generated before the one-step cpu patch_embed: its tile_encoder
            # took PIXELS and carried no encoder parameters.
            raise ModelConfigError(
                f"{err}; a cpu tile_encoder takes TILES and carries the encoder's parameters: "
                "regenerate the repository with `histoprompt-export model-repo`"
            ) from err
        super().__init__(ctx)

    def _onnx_input_shape(self, ctx: ModelContext) -> tuple[int | None, ...]:
        size = self.spec.input_px
        return (None, 3, size, size)

    def check(self, inputs: Inputs) -> Inputs:
        return _check_tiles(inputs)

    def run(self, inputs: Inputs) -> Outputs:
        tiles = inputs[names.TENSOR_TILES]
        assert tiles is not None
        return self._encode(preprocess_tiles(tiles, self.spec))


class RnaEmbed(_OnnxHandler):
    inputs = (names.TENSOR_EXPRESSION,)
    outputs = (names.TENSOR_RNA_EMBEDDING,)


class SlideEmbed(_OnnxHandler):
    """One slide per request: TILE_EMBEDDING [N,D] -> SLIDE_EMBEDDING [1,E], ATTENTION [N]."""

    batched = False
    inputs = (names.TENSOR_TILE_EMBEDDING,)
    outputs = (names.TENSOR_SLIDE_EMBEDDING, names.TENSOR_ATTENTION)


class TileContext(_OnnxHandler):
    """Tile neighbourhood bags TILE_NEIGHBOURHOOD [B,9,D] -> TILE_ALIGNED [B,E] (batched)."""

    inputs = (names.TENSOR_TILE_NEIGHBOURHOOD,)
    outputs = (names.TENSOR_TILE_ALIGNED,)


class PathwayQuery:
    """Wraps histoprompt.core.pathway_engine.PathwayEngine (written by the prompting part)."""

    batched = False
    inputs = (names.TENSOR_SLIDE_EMBEDDING, names.TENSOR_GENE_SETS, names.TENSOR_METHOD)
    outputs = (
        names.TENSOR_SCORES,
        names.TENSOR_COVERAGE,
        names.TENSOR_PERCENTILE,
        names.TENSOR_ZSCORE,
    )

    def __init__(self, ctx: ModelContext, engine: Any | None = None) -> None:
        self.dim = _fixed_dims(ctx, names.TENSOR_SLIDE_EMBEDDING)[-1]
        self.dtypes = {o: ctx.output_dtype(o) for o in self.outputs}
        self.default_method = ctx.param("default_method", "") or None
        self.engine = engine if engine is not None else _load_engine(ctx)

    def check(self, inputs: Inputs) -> Inputs:
        emb = check_tensor(
            names.TENSOR_SLIDE_EMBEDDING,
            inputs.get(names.TENSOR_SLIDE_EMBEDDING),
            dtype=np.float32,
            shape=(None, self.dim),
        )
        sets = inputs.get(names.TENSOR_GENE_SETS)
        if sets is None or sets.dtype != np.object_ or sets.ndim != 1 or sets.size == 0:
            raise RequestError("input GENE_SETS must be a non-empty 1-D BYTES tensor")
        method = inputs.get(names.TENSOR_METHOD)
        if method is not None and (method.dtype != np.object_ or method.size != 1):
            raise RequestError("input METHOD must be one BYTES value")
        return {
            names.TENSOR_SLIDE_EMBEDDING: emb,
            names.TENSOR_GENE_SETS: sets,
            names.TENSOR_METHOD: method,
        }

    def run(self, inputs: Inputs) -> Outputs:
        emb = inputs[names.TENSOR_SLIDE_EMBEDDING]
        sets_raw = inputs[names.TENSOR_GENE_SETS]
        assert emb is not None and sets_raw is not None
        gene_sets = [_text(v) for v in sets_raw.tolist()]
        raw_method = inputs.get(names.TENSOR_METHOD)
        method = _text(raw_method.reshape(-1)[0]) if raw_method is not None else None
        try:
            result = self.engine.query(emb, gene_sets, method or self.default_method)
        except InvalidInputError as err:  # bad set, unknown method, wrong width: this request
            raise RequestError(str(err)) from err
        except (ValueError, KeyError) as err:
            raise RequestError(str(err)) from err
        scores, coverage = result[0], result[1]
        pct = getattr(result, "percentiles", None)  # NaN: method not on the ssGSEA scale
        pct = np.full(np.shape(scores), np.nan) if pct is None else pct
        z = getattr(result, "zscores", None)
        z = np.full(np.shape(scores), np.nan) if z is None else z
        return {
            names.TENSOR_SCORES: np.asarray(scores).astype(self.dtypes[names.TENSOR_SCORES]),
            names.TENSOR_COVERAGE: np.asarray(coverage).astype(self.dtypes[names.TENSOR_COVERAGE]),
            names.TENSOR_PERCENTILE: np.asarray(pct).astype(self.dtypes[names.TENSOR_PERCENTILE]),
            names.TENSOR_ZSCORE: np.asarray(z).astype(self.dtypes[names.TENSOR_ZSCORE]),
        }


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _load_engine(ctx: ModelContext) -> Any:
    try:
        from histoprompt.core import pathway_engine
    except ImportError as err:
        raise ModelConfigError(
            "histoprompt.core.pathway_engine is not installed; pathway_query cannot load"
        ) from err
    reference = ctx.param("reference_uri", "") or str(_local_reference(ctx))
    embed_fn = None
    folder = ctx.artifact_dir()  # an s3:// artifact_uri is downloaded once here
    rna_onnx = folder / "rna_embed.onnx"
    if rna_onnx.is_file():
        runner = OnnxRunner(rna_onnx, intra_op_threads=1)

        def embed_fn(x: NDArray[Any]) -> NDArray[Any]:
            return runner.run(np.ascontiguousarray(x, dtype=np.float32))[names.TENSOR_RNA_EMBEDDING]

    from histoprompt.serving.predictor import load_predictors

    trained = load_predictors(folder)
    try:
        return pathway_engine.PathwayEngine.load(reference, embed_fn=embed_fn, trained=trained)
    except Exception as err:
        raise ModelConfigError(f"{ctx.name}: cannot build the pathway engine: {err}") from err


def _local_reference(ctx: ModelContext) -> Path:
    """`<artifacts>/reference/<name>`: the one reference installed with the bundle."""
    root = ctx.artifact_dir() / "reference"
    found = sorted(p for p in root.glob("*") if (p / "latest.json").is_file())
    if len(found) != 1:
        raise ModelConfigError(
            f"{ctx.name}: expected one reference DB under {root}, found {len(found)}; "
            "set the reference_uri parameter"
        )
    return found[0]


HANDLERS: dict[str, type] = {
    names.MODEL_TILE_PREPROCESS: TilePreprocess,
    names.MODEL_TILE_ENCODER: TileEncoder,
    names.MODEL_SLIDE_EMBED: SlideEmbed,
    names.MODEL_RNA_EMBED: RnaEmbed,
    names.MODEL_TILE_CONTEXT: TileContext,
    names.MODEL_TILE_HEAD: TileHead,
    names.MODEL_PATHWAY_QUERY: PathwayQuery,
}
