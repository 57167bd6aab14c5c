"""Readable pathway scores: a raw ssGSEA enrichment score placed in the reference's distribution.

A raw score (e.g. +856) means nothing without the spread of that gene set's scores over the
reference samples. For each set, against the reference DB's raw ssGSEA scores of that set:

* percentile: 100 x (number of reference samples below + half of those equal) / n, so 50 is
  the reference median and 97.5 a score above 39 of 40 reference samples;
* z: (score - reference mean) / reference standard deviation (population, ddof 0); 0 when
  every reference sample scores the same.

Soft-kNN and the trained predictors predict on the raw ssGSEA scale of the reference, so the
same distribution serves both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["percentile_and_z"]


def percentile_and_z(
    scores: NDArray[Any], reference: Sequence[NDArray[Any]]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """float32 (percentile [B,K] in 0..100, z [B,K]) of scores [B,K]; `reference[j]` holds the
    raw score of set j in every reference sample. NaN scores stay NaN."""
    raw = np.asarray(scores, dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != len(reference):
        raise ValueError(f"scores {raw.shape} need one reference column per set")
    pct = np.full(raw.shape, np.nan, dtype=np.float32)
    z = np.full(raw.shape, np.nan, dtype=np.float32)
    for j, ref in enumerate(reference):
        r = np.sort(np.asarray(ref, dtype=np.float64))
        if r.size == 0:
            continue
        col = raw[:, j]
        ok = np.isfinite(col)
        below = np.searchsorted(r, col[ok], side="left")
        equal = np.searchsorted(r, col[ok], side="right") - below
        pct[ok, j] = 100.0 * (below + 0.5 * equal) / r.size
        sd = float(r.std())
        z[ok, j] = (col[ok] - float(r.mean())) / sd if sd > 0 else 0.0
    return pct, z
