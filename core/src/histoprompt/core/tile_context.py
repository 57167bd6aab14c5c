"""Tile neighbourhoods for the tile-level method `context` (served model `tile_context`).

A tile's score is that of a small bag: the tile and its 8 neighbours on the tile grid
(3 x 3), pooled by the slide model's own gated ABMIL and projected into the aligned space,
then scored by `pathway_query` like a slide. A neighbour that is not a tissue tile (slide
edge, background) is replaced by the tile itself, so every bag has 9 rows and the requests
batch. The one-tile bag (the tile alone, `one_tile_bag`) is the baseline this replaces.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["CONTEXT_ROWS", "OFFSETS", "grid_step", "neighbourhood_index", "neighbourhoods"]

# (dx, dy) in tiles, the tile itself first
OFFSETS: Final = ((0, 0),) + tuple(
    (dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dx, dy) != (0, 0)
)
CONTEXT_ROWS: Final = len(OFFSETS)


def grid_step(xy: NDArray[Any]) -> int:
    """The grid's step in level-0 px: the smallest gap between distinct x (or y); 0 if none."""
    steps: list[int] = []
    for col in range(2):
        uniq = np.unique(np.asarray(xy)[:, col])
        if len(uniq) > 1:
            steps.append(int(np.diff(uniq).min()))
    return min(steps) if steps else 0


def neighbourhood_index(xy: NDArray[Any], step: int | None = None) -> NDArray[Any]:
    """int64 [N, 9]: row indices of each tile's neighbourhood (itself where none)."""
    xy = np.asarray(xy, dtype=np.int64).reshape(-1, 2)
    step = step or grid_step(xy) or 1
    pos = {(int(x) // step, int(y) // step): i for i, (x, y) in enumerate(xy)}
    out = np.empty((len(xy), CONTEXT_ROWS), dtype=np.int64)
    for i, (x, y) in enumerate(xy):
        c, r = int(x) // step, int(y) // step
        out[i] = [pos.get((c + dx, r + dy), i) for dx, dy in OFFSETS]
    return out


def neighbourhoods(embeddings: NDArray[Any], xy: NDArray[Any]) -> NDArray[Any]:
    """float32 [N, 9, D]: the `TILE_NEIGHBOURHOOD` rows for every tile of a slide."""
    emb = np.asarray(embeddings, dtype=np.float32)
    out: NDArray[Any] = emb[neighbourhood_index(xy)]
    return out
