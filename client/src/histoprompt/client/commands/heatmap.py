"""`histoprompt heatmap SLIDE_ID`: attention or tile-level pathway scores over the slide."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from histoprompt.client.commands import SlideId
from histoprompt.client.state import get_state
from histoprompt.client.tile_scores import METHODS, score_tiles

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import NDArray

__all__ = ["heatmap", "score_tiles"]

_METHOD_TEXT = {
    "context": "context: 3x3 tile neighbourhood bags (tile_context)",
    "one-tile-bag": "one-tile-bag: each tile alone (baseline)",
    "st-head": "st-head: head trained on spatial transcriptomics (tile_head)",
    "attention": "attention of the slide model (ABMIL)",
}


def _write_tiles(path: Path, tiles: pd.DataFrame, values: NDArray[Any], pct: NDArray[Any]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = tiles[["level", "x", "y"]].copy() if "level" in tiles else tiles[["x", "y"]].copy()
    frame["score"] = values
    frame["percentile"] = pct
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def _write_geojson(
    path: Path, tiles: pd.DataFrame, pct: NDArray[Any], threshold: float, name: str
) -> int:
    import json

    import numpy as np

    from histoprompt.client.geojson_regions import region_features
    from histoprompt.client.heatmap_render import grid_step

    step = grid_step(tiles) or 1
    keep = np.isfinite(pct) & (pct >= threshold)
    cells = {
        (int(x) // step, int(y) // step): float(p)
        for x, y, p in zip(tiles["x"][keep], tiles["y"][keep], pct[keep], strict=True)
    }
    doc = region_features(cells, step, f"{name} >= P{threshold:g}", threshold)
    path.write_text(json.dumps(doc))
    return len(doc["features"])


def _extras(
    tiles_out: Path | None,
    geojson: Path | None,
    tiles: pd.DataFrame,
    values: NDArray[Any],
    pct: NDArray[Any],
    threshold: float,
    name: str,
) -> str:
    """Write --tiles and --geojson when asked; what was written, for the note."""
    extras = ""
    if tiles_out is not None:
        _write_tiles(tiles_out, tiles, values, pct)
        extras += f"; tiles {tiles_out}"
    if geojson is not None:
        n = _write_geojson(geojson, tiles, pct, threshold, name or "attention")
        extras += f"; {n} regions >= P{threshold:g} in {geojson}"
    return extras


def _values(
    settings: Any, store: Any, slide_id: str, ver: str, tiles: pd.DataFrame, gs: Any, method: str
) -> tuple[NDArray[Any], NDArray[Any] | None, str, str]:
    """(values, percentiles against the reference or None, what, method shown)."""
    if gs is None:
        return tiles["attention"].to_numpy(), None, "attention", "attention"
    xy = tiles[["x", "y"]].to_numpy()
    emb = store.read_tile_embeddings(slide_id, ver)
    values, ref_pct = score_tiles(settings, emb, gs, xy=xy, method=method)
    return values, ref_pct, f"{gs.name} scores", method


def _gene_set(settings: Any, name: str | None) -> Any:
    if name is None:
        return None
    from histoprompt.client.catalog import gene_set_catalog

    return gene_set_catalog(settings).lookup(name)


def _save_figure(image: Any, legend: Any, path: Path) -> Any:
    from histoprompt.client.heatmap_figure import compose, png_info

    figure, layout = compose(image, legend)
    figure.save(path, format="PNG", pnginfo=png_info(legend, layout))
    return figure


def _legend(
    name: str, how: str, slide_id: str, ver: str, tiles: pd.DataFrame, manifest: Any
) -> Any:
    from histoprompt.client.heatmap_figure import Legend

    synthetic = bool(manifest.synthetic)
    lines = (
        f"method: {_METHOD_TEXT[how]}",
        f"slide: {slide_id}",
        f"model: {ver}",
        f"tiles: {len(tiles)}; uncoloured = background",
    ) + (("SYNTHETIC data: not a real patient",) if synthetic else ())
    return Legend(
        title=name + (" (SYNTHETIC)" if synthetic else ""),
        lines=lines,
        extra={"Method": how, "Slide": slide_id, "Model": ver},
    )


def heatmap(
    ctx: typer.Context,
    slide_id: SlideId,
    gene_set: Annotated[
        str | None,
        typer.Option(
            "--gene-set", "-g", help="Colour by this set's tile scores (default: attention)."
        ),
    ] = None,
    method: Annotated[
        str, typer.Option(help="Tile-level method: context, one-tile-bag (baseline), st-head.")
    ] = "context",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="PNG path (default heatmap-SLIDE_ID.png).")
    ] = None,
    size: Annotated[int, typer.Option(min=64, max=8192, help="Map's longest side, px.")] = 1024,
    version: Annotated[
        str | None, typer.Option("--model-version", help="A model version (default: newest).")
    ] = None,
    tiles_out: Annotated[
        Path | None,
        typer.Option("--tiles", help="Also write per-tile scores (level-0 x, y) as Parquet."),
    ] = None,
    geojson: Annotated[
        Path | None,
        typer.Option(help="Also write tiles at or above --threshold as GeoJSON (QuPath)."),
    ] = None,
    threshold: Annotated[
        float, typer.Option(min=0, max=100, help="Percentile for --geojson regions.")
    ] = 75.0,
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Map opacity.")] = 0.5,
) -> None:
    """A PNG of the slide thumbnail with attention (or a gene set's tile scores) overlaid,
    a colour bar (percentile against the reference cohort; of the slide's tiles for
    attention and st-head) and a legend.

    \b
    Example: histoprompt heatmap 0123456789abcdef --gene-set HYPOXIA --out hypoxia.png
    """
    from dataclasses import replace

    from histoprompt.client.commands.results import result_store
    from histoprompt.client.heatmap_figure import REFERENCE_UNITS, percentiles
    from histoprompt.client.heatmap_render import render_heatmap
    from histoprompt.client.output import note
    from histoprompt.client.services import minio_client
    from histoprompt.client.thumbnail import slide_view
    from histoprompt.core.errors import InvalidInputError

    if method not in METHODS:
        raise InvalidInputError(f"unknown --method {method!r}; one of {', '.join(METHODS)}")
    settings = get_state(ctx).settings()
    gs = _gene_set(settings, gene_set)
    store = result_store(settings)
    ver = version or store.latest_version(slide_id)
    manifest = store.read_manifest(slide_id, ver)
    tiles = store.read_tiles(slide_id, ver)
    if tiles.empty:
        raise InvalidInputError(f"slide {slide_id} has no tiles to draw")
    values, ref_pct, what, how = _values(settings, store, slide_id, ver, tiles, gs, method)
    pct = percentiles(values) if ref_pct is None else ref_pct
    geometry, thumb = slide_view(minio_client(settings), manifest.source, tiles)
    image = render_heatmap(
        tiles, pct, geometry, thumb, max_side=size, alpha=alpha, value_range=(0, 100)
    )
    legend = _legend(gs.name if gs else "Attention", how, slide_id, ver, tiles, manifest)
    legend = legend if ref_pct is None else replace(legend, units=REFERENCE_UNITS)
    path = out or Path(f"heatmap-{slide_id}.png")
    figure = _save_figure(image, legend, path)
    extras = _extras(tiles_out, geojson, tiles, values, pct, threshold, gs.name if gs else "")
    note(
        f"wrote {path}: {figure.width}x{figure.height} px, {what} ({how}) over {len(tiles)} "
        f"tiles{' (synthetic)' if manifest.synthetic else ''}; slide "
        f"{geometry.width}x{geometry.height} px from {geometry.source}"
        + ("" if thumb is not None else ", no thumbnail")
        + extras
    )
    typer.echo(str(path))
