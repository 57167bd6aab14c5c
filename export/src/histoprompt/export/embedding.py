"""Run the frozen encoders once per slide and cache the results as .npy.

The cache key holds the encoder name and weights digest, so a different encoder never
reuses another one's embeddings, and a digest of the tiles, so a slide id whose tiles changed
(another renderer, another site's stain) is embedded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from histoprompt.export.alignment_training import PairedEmbeddings
from histoprompt.export.cohort import SyntheticCohort
from histoprompt.export.encoders import LoadedEncoder
from histoprompt.export.rna import RnaEncoder
from histoprompt.serving.preprocess import preprocess_tiles


@torch.no_grad()
def embed_tiles(encoder: LoadedEncoder, tiles: NDArray[Any], batch_size: int = 256) -> NDArray[Any]:
    """uint8 [N,T,T,3] -> float32 [N,D], with the same preprocessing Triton serves."""
    out = []
    for start in range(0, len(tiles), batch_size):
        pixels = preprocess_tiles(tiles[start : start + batch_size], encoder.spec)
        out.append(encoder.module(torch.from_numpy(pixels)).numpy())
    bag: NDArray[Any] = np.concatenate(out).astype(np.float32)
    return bag


def cached_slide_embeddings(
    encoder: LoadedEncoder,
    slides: Sequence[tuple[str, NDArray[Any]]],
    cache_dir: Path,
) -> list[NDArray[Any]]:
    """Embeddings per (slide_id, tiles); computed once, then read from cache_dir."""
    folder = cache_dir / f"{encoder.spec.name}-{encoder.weights_digest}"
    folder.mkdir(parents=True, exist_ok=True)
    bags = []
    for slide_id, tiles in slides:
        digest = hashlib.blake2b(np.ascontiguousarray(tiles).tobytes(), digest_size=6).hexdigest()
        path = folder / f"{slide_id}-{digest}.npy"
        if path.is_file():
            bag = np.load(path)
            if bag.shape[0] == len(tiles):
                bags.append(bag)
                continue
        bag = embed_tiles(encoder, tiles)
        tmp = folder / f"{slide_id}.tmp.npy"
        np.save(tmp, bag)
        tmp.replace(path)
        bags.append(bag)
    return bags


@torch.no_grad()
def embed_expression(
    rna_encoder: RnaEncoder, log1p_tpm: NDArray[Any], batch_size: int = 16
) -> NDArray[Any]:
    """[P, G] -> [P, R], in batches (BulkFormer holds [B, G, dim] activations)."""
    x = np.asarray(log1p_tpm, dtype=np.float32)
    parts = [
        rna_encoder(torch.from_numpy(x[lo : lo + batch_size])).numpy()
        for lo in range(0, x.shape[0], batch_size)
    ]
    out: NDArray[Any] = np.concatenate(parts)
    return out


def paired_embeddings(
    cohort: SyntheticCohort,
    encoder: LoadedEncoder,
    rna_encoder: RnaEncoder,
    cache_dir: Path,
) -> PairedEmbeddings:
    """Frozen-encoder outputs for a SYNTHETIC cohort, ready for `train_alignment`."""
    bags = cached_slide_embeddings(
        encoder, [(s.slide_id, s.tiles) for s in cohort.slides], cache_dir
    )
    aligned = rna_encoder.contract.align(cohort.expression, cohort.genes)
    return PairedEmbeddings(
        bags=bags,
        slide_patients=[s.patient_id for s in cohort.slides],
        patient_ids=list(cohort.patient_ids),
        rna=embed_expression(rna_encoder, aligned.values),
    )
