"""What the serving side tells the data path about the deployed model (no torch needed).

The export side writes an `EncoderSpec` into the `tile_preprocess` model's config parameters
(and into the artifact directory as `encoder.json`); the ingest service reads it back from
Triton, so the tile grid always matches the encoder that is actually served.
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from histoprompt.core.units import Mpp, Pixels

# Most tiles in one patch_embed request: the served models' max_batch_size and the bound of
# every batch-size setting (ingest, TensorRT profile) are this.
MAX_TILE_BATCH: Final = 256


class EncoderSpec(BaseModel):
    """Preprocessing contract of a tile encoder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="encoder name, e.g. uni, conch_v15, virchow2, vit_small, tiny")
    tile_px: Pixels = Field(gt=0, description="tile edge read from the slide, at target_mpp")
    input_px: Pixels = Field(gt=0, description="edge the encoder sees after resize")
    target_mpp: Mpp = Field(gt=0, description="microns per pixel of the tile grid")
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int = Field(gt=0, description="D, the tile embedding width")
    untrained: bool = Field(False, description="true for fixed-seed test encoders")


MODEL_CARD_FILE: Final = "model_card.json"


class WeightFile(BaseModel):
    """One weight or artifact file of the served version, by content."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: str = Field(description="tile_encoder, rna_encoder, alignment, predictor, onnx:<model>")
    name: str = Field(description="architecture or model name, e.g. uni, bulkformer, tiny")
    file: str = Field(description="file name as given (path or s3:// URI), or the bundle file")
    sha256: str | None = Field(None, description="None: no file (fixed-seed UNTRAINED network)")
    untrained: bool = False


class TrainingData(BaseModel):
    """What the alignment module was trained on."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fingerprint: str = Field(description="sha256 over embeddings shapes, genes, configs")
    n_patients: int = Field(ge=0)
    n_slides: int = Field(ge=0)
    n_train_patients: int = Field(ge=0)
    n_val_patients: int = Field(ge=0)
    split: str = Field(description="how train and val were split")
    rna_source: str = Field(description="rna encoder name, or precomputed:<table>")
    synthetic: bool = False


class ParityResult(BaseModel):
    """ONNX Runtime (or TensorRT) against torch for one exported network."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    runtime: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    max_abs_err: float
    min_cosine: float
    passed: bool


class ModelCard(BaseModel):
    """The deployed model bundle: encoder + alignment module + reference, one version string.

    `model_card.json` next to the artifacts (bundle folder, and `tile_preprocess/1/` and
    `pathway_query/1/` of the model repository); `histoprompt-export model-card` prints it.
    The first six fields fix the served configs; the rest document the version.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str = Field(description="stamped into every result; changes with any weight")
    encoder: EncoderSpec
    aligned_dim: int = Field(gt=0, description="E, the aligned embedding width")
    rna_genes: int = Field(ge=0, description="G, genes in the RNA encoder's order")
    synthetic: bool = Field(False, description="trained on the synthetic cohort")
    rna_encoder: str = Field("", description="RNA encoder name (tiny, bulkformer, precomputed)")
    rna_preprocessing: str = Field("", description="normalisation and gene contract of RNA")
    weights: tuple[WeightFile, ...] = ()
    training: TrainingData | None = None
    evaluation: dict[str, float] = Field(default_factory=dict)
    parity: tuple[ParityResult, ...] = ()
    licences: dict[str, str] = Field(
        default_factory=dict, description="component -> licence, as declared at export"
    )
    methods: tuple[str, ...] = Field((), description="pathway_query methods this version serves")
