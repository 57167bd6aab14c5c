"""`histoprompt-export spatial-slide` and `spatial-train` (registered by `export.cli`).

spatial-slide: a SYNTHETIC planted slide (pyramidal TIFF), its per-tile truth and a
Visium-like `.h5ad` driven by the same fields. spatial-train: the STAMP-style tile head.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from histoprompt.export.cli_errors import exit_on_error

__all__ = ["spatial_slide", "spatial_train_command"]


def spatial_slide(
    out: Annotated[Path, typer.Option(help="folder for <id>.tiff, <id>.truth.*, <id>.h5ad")],
    seed: int = 0,
    cols: Annotated[int, typer.Option(min=4, help="tiles across")] = 20,
    rows: Annotated[int, typer.Option(min=4, help="tiles down")] = 16,
) -> None:
    """Write a SYNTHETIC slide with spatially planted programs, its truth and ST spots.

    Example: histoprompt-export spatial-slide --out .demo/spatial --seed 101
    """
    from histoprompt.export.encoder_specs import encoder_spec
    from histoprompt.export.spatial_st import write_st
    from histoprompt.export.spatial_truth import (
        SpatialSlideConfig,
        make_spatial_slide,
        write_spatial_slide,
    )

    tiny = encoder_spec("tiny")
    cfg = SpatialSlideConfig(
        cols=cols, rows=rows, seed=seed, tile_px=int(tiny.tile_px), mpp=float(tiny.target_mpp)
    )
    slide = make_spatial_slide(cfg)
    paths = write_spatial_slide(slide, out)
    st = write_st(out / f"{slide.slide_id}.h5ad", cfg, library_id=slide.slide_id)
    typer.echo(
        f"wrote SYNTHETIC {paths['slide']} ({len(slide.tiles)} tissue tiles), "
        f"{paths['truth']} and {st}"
    )


def spatial_train_command(
    st: Annotated[list[Path], typer.Option("--st", help="Visium-like .h5ad (repeatable)")],
    slide: Annotated[
        list[Path], typer.Option("--slide", help="its slide, TIFF/SVS (one per --st)")
    ],
    bundle: Annotated[Path, typer.Option(help="bundle folder: tile_encoder.onnx, encoder.json")],
    out: Annotated[Path, typer.Option(help="folder for tile_head.onnx and tile_head.json")],
    ridge: Annotated[float, typer.Option(min=0.0, help="ridge penalty")] = 50.0,
    all_sets: Annotated[bool, typer.Option(help="every Hallmark set, not the demo's")] = False,
) -> None:
    """Train a tile-level pathway head from spatial transcriptomics (STAMP-style).

    Spots -> pathway scores (mean z) -> tiles under each spot -> ridge head on the frozen
    tile embeddings -> tile_head.onnx (parity-checked).

    Example: histoprompt-export spatial-train --st s.h5ad --slide s.tiff --bundle b/ --out h/
    """
    from histoprompt.export.spatial_train import spatial_train

    with exit_on_error():
        doc = spatial_train(st, slide, bundle, out, ridge=ridge, all_sets=all_sets)
    r2 = doc["head"]["in_sample_r2"]
    n = sum(s["tiles_with_spot"] for s in doc["samples"])
    typer.echo(
        f"wrote {out / 'tile_head.onnx'}: {len(doc['gene_sets'])} sets, {n} tiles; in-sample R2 "
        f"median {sorted(r2.values())[len(r2) // 2]:.3f}; parity max abs "
        f"{doc['parity']['max_abs_err']:.1e}" + (" (SYNTHETIC)" if doc["synthetic"] else "")
    )
