"""What the serving side tells the data path about the deployed model (no torch needed).

The export side writes an `EncoderSpec` into the `tile_preprocess` model's config parameters
(and into the artifact directory as `encoder.json`); the ingest service reads it back from
Triton, so the tile grid always matches the encoder that is actually served.
"""

from __future__ import annotations

from typing import Final

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


class ModelCard(BaseModel):
    """The deployed model bundle: encoder + alignment module + reference, one version string."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str = Field(description="stamped into every result; changes with any weight")
    encoder: EncoderSpec
    aligned_dim: int = Field(gt=0, description="E, the aligned embedding width")
    rna_genes: int = Field(ge=0, description="G, genes in the RNA encoder's order")
    synthetic: bool = Field(False, description="trained on the synthetic cohort")
