"""Thresholded tile regions as GeoJSON that QuPath imports (File > Import objects).

Tiles at or above a percentile are unioned on the tile grid and traced into polygons with
holes, in level-0 pixel coordinates (QuPath's image space; y grows downwards). One Feature
per connected region, `objectType: annotation`, with a classification and the mean score.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

__all__ = ["region_features", "trace_rings"]

Cell = tuple[int, int]
Point = tuple[int, int]


def trace_rings(cells: set[Cell]) -> list[list[Point]]:
    """Closed boundary rings (grid units) of the union of unit cells (col, row).

    Edges run with the region on their left (y-down image coordinates: clockwise on screen
    for outer rings); at a vertex where two regions touch corner to corner, the tracer turns
    so that rings never cross.
    """
    out_edges: dict[Point, list[Point]] = defaultdict(list)
    for c, r in cells:
        # corners: (c, r) top-left ... walk with the cell on the left
        corners = [(c, r), (c, r + 1), (c + 1, r + 1), (c + 1, r)]
        neighbours = [(c - 1, r), (c, r + 1), (c + 1, r), (c, r - 1)]
        for k in range(4):
            if neighbours[k] not in cells:
                out_edges[corners[k]].append(corners[(k + 1) % 4])
    rings: list[list[Point]] = []
    while out_edges:
        start = next(iter(out_edges))
        ring = [start]
        prev, cur = start, out_edges[start].pop()
        if not out_edges[start]:
            del out_edges[start]
        while cur != start:
            ring.append(cur)
            options = out_edges[cur]
            nxt = options[0] if len(options) == 1 else _turn(prev, cur, options)
            options.remove(nxt)
            if not options:
                del out_edges[cur]
            prev, cur = cur, nxt
        ring.append(start)
        rings.append(ring)
    return rings


def _turn(prev: Point, cur: Point, options: list[Point]) -> Point:
    """At a pinch vertex keep the ring on its own cell: take the left-most turn."""
    dx, dy = cur[0] - prev[0], cur[1] - prev[1]
    left = (dy, -dx)  # in y-down coordinates, with the region on the left
    for o in options:
        if (o[0] - cur[0], o[1] - cur[1]) == left:
            return o
    return options[0]


def _area(ring: list[Point]) -> float:
    return 0.5 * sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False))


def _components(cells: set[Cell]) -> list[set[Cell]]:
    seen: set[Cell] = set()
    parts = []
    for cell in cells:
        if cell in seen:
            continue
        stack, part = [cell], set()
        seen.add(cell)
        while stack:
            c, r = stack.pop()
            part.add((c, r))
            for n in ((c + 1, r), (c - 1, r), (c, r + 1), (c, r - 1)):
                if n in cells and n not in seen:
                    seen.add(n)
                    stack.append(n)
        parts.append(part)
    return parts


def region_features(
    cells: dict[Cell, float], step: int, name: str, threshold: float
) -> dict[str, Any]:
    """A FeatureCollection of the regions formed by `cells` ((col,row) -> score)."""
    features = []
    for part in _components(set(cells)):
        rings = trace_rings(part)
        # y-down coordinates: outer rings have negative shoelace area here, holes positive.
        outer = [r for r in rings if _area(r) < 0]
        holes = [r for r in rings if _area(r) > 0]
        coords = [
            [[x * step, y * step] for x, y in ring[::-1]] for ring in outer[:1] + holes
        ]  # reversed: exterior counter-clockwise in GeoJSON's y-up sense (RFC 7946)
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": coords},
                "properties": {
                    "objectType": "annotation",
                    "name": name,
                    "classification": {"name": name, "color": [250, 200, 30]},
                    "threshold_percentile": threshold,
                    "n_tiles": len(part),
                    "mean_score": float(sum(cells[c] for c in part) / len(part)),
                },
            }
        )
    return {"type": "FeatureCollection", "features": features}
