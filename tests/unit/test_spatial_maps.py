"""Spatial pathway maps (issue 14), all SYNTHETIC: planted truth beside the slide, a
Visium-like .h5ad, spot -> tile mapping, the tile_context model and neighbourhoods, the
heatmap figure's colour bar and legend, GeoJSON regions, and the ST-trained head's ONNX."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from histoprompt.export.spatial_truth import (
    PROGRAM_NAMES,
    SpatialSlideConfig,
    fields_at,
    make_spatial_slide,
    read_truth,
    write_spatial_slide,
)

SMALL = SpatialSlideConfig(cols=10, rows=8, tile_px=32, seed=3)


def test_planted_slide_varies_in_space_and_writes_its_truth(tmp_path: Path) -> None:
    import tifffile

    slide = make_spatial_slide(SMALL)
    paths = write_spatial_slide(slide, tmp_path)
    truth, meta = read_truth(paths["truth"])
    assert meta["synthetic"] and "SYNTHETIC" in meta["note"]
    assert {p["kind"] for p in meta["programs"]} == {"region", "gradient"}
    assert list(truth[["x", "y"]].itertuples(index=False, name=None)) == [
        tuple(map(int, xy)) for xy in slide.xy
    ]
    for name in PROGRAM_NAMES:
        col = truth[f"truth_{name}"].to_numpy()
        assert col.std() > 0.3, name  # varies inside the one slide
        assert truth[f"region_{name}"].any() and not truth[f"region_{name}"].all()
    # the truth is the planted field at each tile centre
    fields, tissue = fields_at(SMALL, slide.xy[:, 0] + 16, slide.xy[:, 1] + 16)
    assert tissue.all() and np.allclose(fields, slide.truth, atol=1e-5)
    level0 = tifffile.imread(paths["slide"], level=0)
    assert level0.shape[:2] == (8 * 32, 10 * 32)
    (x, y), tile = slide.xy[0], slide.tiles[0].astype(float)
    assert np.abs(level0[y : y + 32, x : x + 32].astype(float) - tile).mean() < 12  # JPEG
    background = np.ones((8, 10), bool)
    background[slide.xy[:, 1] // 32, slide.xy[:, 0] // 32] = False
    r, c = np.argwhere(background)[0]
    assert level0[r * 32 : r * 32 + 32, c * 32 : c * 32 + 32].mean() > 235


def test_st_h5ad_is_visium_like_and_follows_the_planted_fields(tmp_path: Path) -> None:
    import anndata as ad
    from scipy.stats import spearmanr

    from histoprompt.export.spatial_st import (
        map_spots_to_tiles,
        pathway_scores,
        program_sets,
        read_st,
        write_st,
    )

    cfg = SpatialSlideConfig(cols=16, rows=12, tile_px=32, seed=5)
    path = write_st(tmp_path / "st.h5ad", cfg, library_id="SYN5")
    raw = ad.read_h5ad(path)
    assert raw.obsm["spatial"].shape == (raw.n_obs, 2)
    assert raw.uns["spatial"]["SYN5"]["scalefactors"]["spot_diameter_fullres"] == 48.0
    assert "HIF1A" in raw.var_names or "VEGFA" in raw.var_names
    assert raw.uns["histoprompt"]["synthetic"]
    sample = read_st(path)
    names, scores = pathway_scores(sample, program_sets())
    fields, _ = fields_at(cfg, sample.xy[:, 0], sample.xy[:, 1])
    hyp = spearmanr(scores[:, names.index("HALLMARK_HYPOXIA")], fields[:, 3]).statistic
    assert hyp > 0.6  # mean z of the set follows the planted hypoxia field
    slide = make_spatial_slide(cfg)
    spot = map_spots_to_tiles(sample, slide.xy, cfg.tile_px)
    assert (spot >= 0).mean() > 0.8  # tiles at the tissue edge may lie between spots
    centres = slide.xy[spot >= 0] + 16
    dist = np.linalg.norm(centres - sample.xy[spot[spot >= 0]], axis=1)
    assert dist.max() <= 24 + 16  # spot radius + half a tile


def test_neighbourhoods_fill_missing_neighbours_with_the_tile_itself() -> None:
    from histoprompt.core.tile_context import CONTEXT_ROWS, neighbourhood_index

    xy = np.array([[0, 0], [256, 0], [0, 256], [512, 512]])
    idx = neighbourhood_index(xy)
    assert idx.shape == (4, CONTEXT_ROWS) and (idx[:, 0] == np.arange(4)).all()
    assert set(idx[0]) == {0, 1, 2}
    assert set(idx[3]) == {3}  # isolated tile: a bag of itself


def _cells_with_a_hole() -> dict[tuple[int, int], float]:
    ring = {(c, r): 1.0 for c in range(4) for r in range(4) if not (c in (1, 2) and r in (1, 2))}
    return {**ring, (7, 7): 2.0, (8, 8): 3.0}  # and two cells touching at a corner


def test_geojson_regions_are_valid_geojson_with_holes() -> None:
    import geojson

    from histoprompt.client.geojson_regions import region_features

    doc = region_features(_cells_with_a_hole(), 256, "HYPOXIA >= P75", 75.0)
    obj = geojson.loads(json.dumps(doc))
    assert obj.is_valid, obj.errors()
    polys = [f["geometry"]["coordinates"] for f in doc["features"]]
    assert sorted(len(p) for p in polys) == [1, 1, 2]  # the ring has one hole
    holed = next(p for p in polys if len(p) == 2)
    xs = [x for x, _ in holed[0]]
    assert (min(xs), max(xs)) == (0, 4 * 256)
    assert {f["properties"]["objectType"] for f in doc["features"]} == {"annotation"}


def test_heatmap_figure_has_colour_bar_legend_and_blends_only_tissue(tmp_path: Path) -> None:
    from PIL import Image

    from histoprompt.client.heatmap_figure import Legend, compose, percentiles, png_info
    from histoprompt.client.heatmap_render import SlideGeometry, colormap, render_heatmap

    tiles = pd.DataFrame({"x": [0, 100, 0], "y": [0, 0, 100]})
    thumb = Image.new("RGB", (200, 200), (240, 240, 240))
    pct = percentiles(np.array([1.0, 3.0, 2.0]))
    assert list(pct) == [0.0, 100.0, 50.0]
    img = render_heatmap(tiles, pct, SlideGeometry(200, 200, "t"), thumb, 200, 0.5, (0, 100))
    legend = Legend(title="HALLMARK_HYPOXIA (SYNTHETIC)", lines=("method: context",))
    fig, layout = compose(img, legend)
    fig.save(tmp_path / "h.png", pnginfo=png_info(legend, layout))
    with Image.open(tmp_path / "h.png") as im:
        text = dict(im.text)
        px = np.asarray(im.convert("RGB")).astype(int)
    assert text["Title"] == "HALLMARK_HYPOXIA (SYNTHETIC)" and "context" in text["Legend"]
    assert text["Units"].startswith("percentile")
    left, top, right, bottom = (int(v) for v in text["ColourBar"].split(","))
    assert left > 200  # the panel is beside the map
    column = px[top:bottom, (left + right) // 2]
    want = colormap(np.linspace(1.0, 0.0, bottom - top)).astype(int)
    assert np.abs(column - want).max() <= 1  # top = 100th percentile, viridis
    assert (px[150, 150] == 240).all()  # background (no tile) is not coloured
    blended = px[50, 150]  # tile at 100th percentile, half over the grey thumbnail
    assert np.abs(blended - (0.5 * colormap(np.array([1.0]))[0] + 0.5 * 240)).max() <= 2
    panel = px[: layout.colour_bar[1], 200:]
    assert (panel < 100).any()  # text was drawn


@pytest.mark.slow
def test_tile_head_exports_with_parity(tmp_path: Path) -> None:
    import onnxruntime as ort
    import torch

    from histoprompt.export.spatial_train import export_tile_head, fit_head

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 24)).astype(np.float32)
    w = rng.normal(size=(24, 3))
    y = x @ w + rng.normal(0, 0.1, size=(200, 3))
    head = fit_head(x, y, ridge=1.0)
    with torch.no_grad():
        pred = head(torch.from_numpy(x)).numpy()
    assert np.corrcoef(pred[:, 0], y[:, 0])[0, 1] > 0.99
    record = export_tile_head(head, tmp_path / "tile_head.onnx")
    assert record.passed
    sess = ort.InferenceSession(str(tmp_path / "tile_head.onnx"))
    got = sess.run(None, {"TILE_EMBEDDING": x[:5]})[0]
    assert np.allclose(got, pred[:5], atol=1e-4)


@pytest.mark.slow
def test_tile_head_is_served_when_installed_and_refused_politely_when_not(
    tmp_path: Path,
) -> None:
    from helpers.tiny_model import served_config, tiny_card

    from histoprompt.core import names
    from histoprompt.export.model_repo import install_artifacts
    from histoprompt.export.spatial_train import export_tile_head, fit_head
    from histoprompt.serving.context import ModelContext
    from histoprompt.serving.errors import RequestError
    from histoprompt.serving.handlers import HANDLERS

    card = tiny_card()
    config = served_config(card, names.MODEL_TILE_HEAD)
    repo = tmp_path / "repo"
    version = repo / names.MODEL_TILE_HEAD / "1"
    version.mkdir(parents=True)
    empty = HANDLERS[names.MODEL_TILE_HEAD](ModelContext.from_config(config, version))
    x = np.random.default_rng(0).normal(size=(6, 192)).astype(np.float32)
    with pytest.raises(RequestError, match="spatial-train"):
        empty.check({names.TENSOR_TILE_EMBEDDING: x})
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model_card.json").write_text(card.model_dump_json())
    head = fit_head(x, x[:, :2] * 2.0, ridge=1.0)
    assert export_tile_head(head, bundle / "tile_head.onnx").passed
    (bundle / "tile_head.json").write_text(json.dumps({"gene_sets": ["A_SET", "B_SET"]}))
    install_artifacts(bundle, repo)
    served = HANDLERS[names.MODEL_TILE_HEAD](ModelContext.from_config(config, version))
    out = served.run(served.check({names.TENSOR_TILE_EMBEDDING: x}))
    assert out[names.TENSOR_SCORES].shape == (6, 2)
    assert out[names.TENSOR_GENE_SETS].shape == (6, 2)
    assert out[names.TENSOR_GENE_SETS][0, 1] == b"B_SET"
