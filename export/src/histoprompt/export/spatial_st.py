"""SYNTHETIC spatial transcriptomics beside a planted slide, in the Visium-like AnnData layout.

Writer (`write_st`): spots on a hexagonal lattice over the slide's tissue (Visium: 55 µm
spots 100 µm apart; here `spot_diameter_tiles` and `spot_spacing_tiles` in tile units),
raw counts driven by the same planted fields as the slide (`spatial_truth.fields_at`):
log-rate = baseline + Σ_k loading_k · field_k(spot) for the genes of each program's Hallmark
sets, Poisson counts. `.h5ad` layout: `X` raw counts (spots x genes), `var_names` gene
symbols, `obs_names` barcodes, `obs[in_tissue, array_row, array_col]`, `obsm["spatial"]`
level-0 pixel (x, y) of each spot centre, `uns["spatial"][<library>]["scalefactors"]
["spot_diameter_fullres"]` in level-0 px, `uns["histoprompt"]` the SYNTHETIC note.

Reader side (`read_st`, `pathway_scores`, `map_spots_to_tiles`), used by `spatial-train`:
pathway aggregation is **mean z**: counts -> log1p(CPM) -> z-score per gene over the spots
-> per gene set, the mean z of its genes present (at least 5). A tile takes the spot
nearest to its centre among those whose disk, grown by half a tile, contains the centre
(`distance <= spot radius + tile_px / 2`); other tiles get no target.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.export.cohort import PROGRAMS, SYNTHETIC_NOTE, hallmark_gmt_path, read_gmt
from histoprompt.export.errors import ExportError
from histoprompt.export.spatial_truth import SpatialSlideConfig, fields_at

__all__ = [
    "STSample",
    "map_spots_to_tiles",
    "pathway_scores",
    "program_sets",
    "read_st",
    "write_st",
]

MIN_GENES = 5


@dataclass(frozen=True)
class STSample:
    """Spots x genes raw counts with level-0 spot centres and spot diameter (px)."""

    counts: NDArray[Any]  # float32 [S, G]
    genes: tuple[str, ...]
    xy: NDArray[Any]  # float64 [S, 2]
    spot_diameter_px: float
    library_id: str
    synthetic: bool = False


def program_sets() -> dict[str, tuple[str, ...]]:
    """The Hallmark sets the planted programs drive (name -> genes)."""
    gmt = read_gmt(hallmark_gmt_path())
    return {h: gmt[h] for p in PROGRAMS for h in p.hallmarks if h in gmt}


def _spots(config: SpatialSlideConfig, spacing: float) -> tuple[NDArray[Any], NDArray[Any]]:
    width, height = config.cols * config.tile_px, config.rows * config.tile_px
    pitch_y = spacing * np.sqrt(3) / 2
    xy, rc = [], []
    for row in range(int(height / pitch_y) + 1):
        off = spacing / 2 if row % 2 else 0.0
        for col in range(int(width / spacing) + 1):
            x, y = spacing / 2 + off + col * spacing, spacing / 2 + row * pitch_y
            if x < width and y < height:
                xy.append((x, y))
                rc.append((row, 2 * col + row % 2))
    return np.asarray(xy, dtype=np.float64), np.asarray(rc, dtype=np.int64)


def write_st(
    path: Path,
    config: SpatialSlideConfig,
    *,
    library_id: str,
    spot_spacing_tiles: float = 2.0,
    spot_diameter_tiles: float = 1.5,
    n_other_genes: int = 300,
    depth: float = 1.0,
) -> Path:
    """Write the SYNTHETIC Visium-like `.h5ad` for the slide planted by `config`."""
    import anndata as ad
    import pandas as pd

    rng = np.random.default_rng([config.seed, 2])
    spacing, diameter = spot_spacing_tiles * config.tile_px, spot_diameter_tiles * config.tile_px
    xy, rc = _spots(config, spacing)
    fields, tissue = fields_at(config, xy[:, 0], xy[:, 1])
    xy, rc, fields = xy[tissue], rc[tissue], fields[tissue]
    gmt = read_gmt(hallmark_gmt_path())
    linked = [sorted({g for h in p.hallmarks for g in gmt.get(h, ())}) for p in PROGRAMS]
    all_genes = sorted({g for members in gmt.values() for g in members})
    pool = sorted(set(all_genes) - {g for genes in linked for g in genes})
    others = list(rng.choice(pool, size=min(n_other_genes, len(pool)), replace=False))
    genes = sorted({g for genes in linked for g in genes} | set(others))
    pos = {g: i for i, g in enumerate(genes)}
    loadings = np.zeros((len(PROGRAMS), len(genes)))
    for k, members in enumerate(linked):
        loadings[k, [pos[g] for g in members]] = rng.uniform(0.3, 0.7, size=len(members))
    baseline = rng.uniform(-0.5, 2.0, size=len(genes))
    rate = np.exp(baseline + fields @ loadings + rng.normal(0, 0.2, size=(len(xy), len(genes))))
    counts = rng.poisson(depth * rate).astype(np.float32)
    obs = pd.DataFrame(
        {"in_tissue": 1, "array_row": rc[:, 0], "array_col": rc[:, 1]},
        index=[f"SYN-{library_id}-{i:05d}-1" for i in range(len(xy))],
    )
    adata = ad.AnnData(X=counts, obs=obs, var=pd.DataFrame(index=genes))
    adata.obsm["spatial"] = xy
    adata.uns["spatial"] = {
        library_id: {"scalefactors": {"spot_diameter_fullres": float(diameter)}}
    }
    adata.uns["histoprompt"] = {"synthetic": True, "note": SYNTHETIC_NOTE, "seed": config.seed}
    path.parent.mkdir(parents=True, exist_ok=True)
    adata.write_h5ad(path)
    return path


def read_st(path: Path) -> STSample:
    """Counts, genes, spot centres and diameter from a Visium-like `.h5ad`."""
    try:
        import anndata as ad
    except ImportError as err:  # pragma: no cover - the h5ad extra is part of make install
        raise ExportError("reading .h5ad needs anndata: uv sync --extra h5ad") from err
    try:
        adata = ad.read_h5ad(path)
    except (OSError, ValueError) as err:
        raise ExportError(f"cannot read {path} as .h5ad: {err}") from err
    if "spatial" not in adata.obsm:
        raise ExportError(f"{path}: no obsm['spatial'] (spot coordinates, level-0 px)")
    libraries = dict(adata.uns.get("spatial", {}))
    if len(libraries) != 1:
        raise ExportError(f"{path}: expected one library in uns['spatial'], found {len(libraries)}")
    library_id, lib = next(iter(libraries.items()))
    try:
        diameter = float(lib["scalefactors"]["spot_diameter_fullres"])
    except (KeyError, TypeError) as err:
        raise ExportError(f"{path}: no scalefactors.spot_diameter_fullres") from err
    x = adata.X
    counts = np.asarray(x.toarray() if hasattr(x, "toarray") else x, dtype=np.float32)
    return STSample(
        counts=counts,
        genes=tuple(str(g) for g in adata.var_names),
        xy=np.asarray(adata.obsm["spatial"], dtype=np.float64)[:, :2],
        spot_diameter_px=diameter,
        library_id=str(library_id),
        synthetic=bool(dict(adata.uns.get("histoprompt", {})).get("synthetic", False)),
    )


def pathway_scores(
    sample: STSample, gene_sets: dict[str, tuple[str, ...]]
) -> tuple[list[str], NDArray[Any]]:
    """(set names, [S, K] mean-z scores): log1p(CPM), z per gene over spots, mean per set."""
    lib = sample.counts.sum(axis=1, keepdims=True)
    logcpm = np.log1p(sample.counts / np.maximum(lib, 1.0) * 1e6)
    sd = logcpm.std(axis=0)
    z = (logcpm - logcpm.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    pos = {g: i for i, g in enumerate(sample.genes)}
    names, cols = [], []
    for name, members in gene_sets.items():
        idx = [pos[g] for g in members if g in pos]
        if len(idx) >= MIN_GENES:
            names.append(name)
            cols.append(z[:, idx].mean(axis=1))
    if not names:
        raise ExportError(f"no gene set has {MIN_GENES}+ genes among the sample's genes")
    return names, np.stack(cols, axis=1).astype(np.float32)


def map_spots_to_tiles(sample: STSample, tile_xy: NDArray[Any], tile_px: int) -> NDArray[Any]:
    """int64 [N]: the spot index of each tile (-1: no spot covers its centre)."""
    centres = np.asarray(tile_xy, dtype=np.float64) + tile_px / 2
    d = np.linalg.norm(centres[:, None, :] - sample.xy[None, :, :], axis=2)
    nearest = d.argmin(axis=1)
    reach = sample.spot_diameter_px / 2 + tile_px / 2
    out: NDArray[Any] = np.where(d[np.arange(len(d)), nearest] <= reach, nearest, -1)
    return out.astype(np.int64)
