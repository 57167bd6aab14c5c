"""Names fixed by docs/architecture.md: Kafka topics, Triton models and tensors, S3 layout.

model.py files, the ingest service and the client import these, never literals.
"""

from __future__ import annotations

from typing import Final

# Kafka topics
TOPIC_INCOMING: Final = "histoprompt.slides.incoming"
TOPIC_RESULTS: Final = "histoprompt.slides.results"
TOPIC_DLQ: Final = "histoprompt.slides.dlq"
ALL_TOPICS: Final = (TOPIC_INCOMING, TOPIC_RESULTS, TOPIC_DLQ)

# Triton models
MODEL_TILE_PREPROCESS: Final = "tile_preprocess"
MODEL_TILE_ENCODER: Final = "tile_encoder"
MODEL_PATCH_EMBED: Final = "patch_embed"
MODEL_SLIDE_EMBED: Final = "slide_embed"
MODEL_RNA_EMBED: Final = "rna_embed"
MODEL_PATHWAY_QUERY: Final = "pathway_query"
MODEL_SLIDE_TO_PATHWAYS: Final = "slide_to_pathways"
# tile-level scores: a tile's 3x3 neighbourhood pooled by the slide model's ABMIL (batched)
MODEL_TILE_CONTEXT: Final = "tile_context"
# the ST-trained tile head (histoprompt-export spatial-train), optional: loads without it
MODEL_TILE_HEAD: Final = "tile_head"
# Every served model (docs/architecture.md, section 5); dependencies before their ensembles.
ALL_MODELS: Final = (
    MODEL_TILE_PREPROCESS,
    MODEL_TILE_ENCODER,
    MODEL_PATCH_EMBED,
    MODEL_SLIDE_EMBED,
    MODEL_RNA_EMBED,
    MODEL_PATHWAY_QUERY,
    MODEL_SLIDE_TO_PATHWAYS,
    MODEL_TILE_CONTEXT,
    MODEL_TILE_HEAD,
)

# Triton tensors
TENSOR_TILES: Final = "TILES"
TENSOR_PIXELS: Final = "PIXELS"
TENSOR_TILE_EMBEDDING: Final = "TILE_EMBEDDING"
TENSOR_SLIDE_EMBEDDING: Final = "SLIDE_EMBEDDING"
TENSOR_ATTENTION: Final = "ATTENTION"
TENSOR_EXPRESSION: Final = "EXPRESSION"
TENSOR_RNA_EMBEDDING: Final = "RNA_EMBEDDING"
# input of rna_head.onnx: a precomputed RNA-encoder output (the RNA model runs elsewhere)
TENSOR_RNA_FEATURES: Final = "RNA_FEATURES"
TENSOR_GENE_SETS: Final = "GENE_SETS"
TENSOR_METHOD: Final = "METHOD"
TENSOR_SCORES: Final = "SCORES"
TENSOR_COVERAGE: Final = "COVERAGE"
# pathway_query: each score's percentile among the reference samples' raw ssGSEA scores
TENSOR_PERCENTILE: Final = "PERCENTILE"
# pathway_query: each score's z against the same reference scores ((score - mean) / sd)
TENSOR_ZSCORE: Final = "ZSCORE"
# slide_to_pathways' optional outputs: a repository older than them serves neither
READABLE_OUTPUTS: Final = (TENSOR_PERCENTILE, TENSOR_ZSCORE)
# tile_context: [9, D] tile embeddings (the tile, then its 8 grid neighbours) -> [E]
TENSOR_TILE_NEIGHBOURHOOD: Final = "TILE_NEIGHBOURHOOD"
TENSOR_TILE_ALIGNED: Final = "TILE_ALIGNED"

# S3 result layout: s3://<results-bucket>/slides/<slide_id>/<model_version>/<object>
RESULT_TILES: Final = "tiles.parquet"
RESULT_TILE_EMBEDDINGS: Final = "tile_embeddings.npy"
RESULT_SLIDE_EMBEDDING: Final = "slide_embedding.npy"
RESULT_PATHWAYS: Final = "pathways.json"
RESULT_MANIFEST: Final = "manifest.json"

# A DICOM-WSI series is ready when this object lands under the series prefix.
SERIES_MANIFEST: Final = "manifest.json"


SLIDE_ID_CHARS: Final = frozenset("0123456789abcdef")
SLIDE_ID_LENGTH: Final = 16


def check_slide_id(value: str) -> str:
    """`value` when it is a slide id (16 lower-case hex characters, as slide_id_for and
    series_slide_id make them); InvalidInputError before it becomes part of an S3 key."""
    if len(value) != SLIDE_ID_LENGTH or not set(value) <= SLIDE_ID_CHARS:
        from histoprompt.core.errors import InvalidInputError

        raise InvalidInputError(
            f"{value[:40]!r} is not a slide id (16 lower-case hex characters, as submit prints)"
        )
    return value


def result_prefix(slide_id: str, model_version: str) -> str:
    """Object-key prefix (no bucket) of one slide's results for one model version."""
    return f"slides/{slide_id}/{model_version}/"


def result_key(slide_id: str, model_version: str, name: str) -> str:
    """Object key of one result file."""
    return result_prefix(slide_id, model_version) + name
