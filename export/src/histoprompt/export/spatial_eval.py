"""Tile-level maps against planted truth (SYNTHETIC): Spearman and AUROC per program.

For each held-out planted slide (`spatial_truth`) and each program, the map of the program's
first Hallmark set is compared with the planted per-tile field (Spearman rho) and with the
region membership (AUROC, field > 0). Methods, each run through the same ONNX files and the
same `PathwayEngine` that Triton serves (ONNX Runtime on CPU here):

* `one_tile_bag` (baseline): `slide_embed.onnx` on each tile alone, then soft-kNN scores;
* `context` (served tile-level method): `tile_context.onnx` on 3 x 3 neighbourhood bags, then
  soft-kNN scores;
* `st_head`: the ST-trained `tile_head.onnx` (`spatial_train`), trained on other slides.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from histoprompt.export.cohort import PROGRAMS
from histoprompt.export.spatial_truth import SpatialSlide, SpatialSlideConfig

__all__ = ["METHODS", "evaluate_maps", "method_maps", "run_validation", "summarise"]

METHODS = ("one_tile_bag", "context", "st_head")


def _session(path: Path) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _run(sess: Any, x: NDArray[Any]) -> NDArray[Any]:
    out: NDArray[Any] = sess.run(None, {sess.get_inputs()[0].name: x.astype(np.float32)})[0]
    return out


def _engine(bundle: Path) -> Any:
    from histoprompt.core.pathway_engine import PathwayEngine
    from histoprompt.core.reference_store import load_reference_uri

    (ref,) = [p for p in (bundle / "reference").iterdir() if p.is_dir()]
    return PathwayEngine.for_reference(load_reference_uri(str(ref), None))


def method_maps(
    bundle: Path, slide: SpatialSlide, emb: NDArray[Any], head_dir: Path | None, engine: Any
) -> dict[str, NDArray[Any]]:
    """method -> scores [N, K programs] (each program's first Hallmark set)."""
    import json

    from histoprompt.core.tile_context import neighbourhoods
    from histoprompt.export.tile_context import ensure_tile_context

    sets = [p.hallmarks[0] for p in PROGRAMS]
    slide_sess = _session(bundle / "slide_embed.onnx")
    one = np.concatenate([_run(slide_sess, row[None, :]) for row in emb])
    ctx_path = ensure_tile_context(bundle)
    assert ctx_path is not None
    ctx = _run(_session(ctx_path), neighbourhoods(emb, slide.xy))
    maps = {
        "one_tile_bag": engine.query(one, sets, "soft_knn").scores,
        "context": engine.query(ctx, sets, "soft_knn").scores,
    }
    if head_dir is not None:
        names = json.loads((head_dir / "tile_head.json").read_text())["gene_sets"]
        pred = _run(_session(head_dir / "tile_head.onnx"), emb)
        maps["st_head"] = pred[:, [names.index(s) for s in sets]]
    return maps


def evaluate_maps(
    bundle: Path, slides: Sequence[SpatialSlide], head_dir: Path | None = None
) -> pd.DataFrame:
    """One row per (slide, program, method): spearman, auroc, n_tiles."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    from histoprompt.export.spatial_train import embed_tiles_onnx

    engine = _engine(bundle)
    rows = []
    for slide in slides:
        emb = embed_tiles_onnx(bundle, slide.tiles)
        for method, scores in method_maps(bundle, slide, emb, head_dir, engine).items():
            for k, prog in enumerate(PROGRAMS):
                s, truth, region = scores[:, k], slide.truth[:, k], slide.regions[:, k]
                both = region.any() and (~region).any()
                rows.append(
                    {
                        "slide": slide.slide_id,
                        "program": prog.name,
                        "gene_set": prog.hallmarks[0],
                        "method": method,
                        "spearman": float(spearmanr(s, truth).statistic),
                        "auroc": float(roc_auc_score(region, s)) if both else float("nan"),
                        "n_tiles": len(s),
                    }
                )
    return pd.DataFrame(rows)


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """Mean Spearman and AUROC per method (over slides and programs), in METHODS order."""
    out = table.groupby("method")[["spearman", "auroc"]].mean()
    return out.reindex([m for m in METHODS if m in out.index])


def run_validation(
    bundle: Path,
    work: Path,
    *,
    train_seeds: Sequence[int] = (101, 102),
    test_seeds: Sequence[int] = (1, 2, 3, 4),
    config: SpatialSlideConfig | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Held out by slide: the ST head is trained on the `train_seeds` slides (TIFF + .h5ad
    written to `work`), every method is evaluated on the `test_seeds` slides."""
    from histoprompt.export.spatial_st import write_st
    from histoprompt.export.spatial_train import spatial_train
    from histoprompt.export.spatial_truth import make_spatial_slide, write_spatial_slide

    base = config or SpatialSlideConfig()
    if set(train_seeds) & set(test_seeds):
        raise ValueError("train and test slides must differ")
    st_files, slide_files = [], []
    for seed in train_seeds:
        cfg = base.model_copy(update={"seed": seed})
        slide = make_spatial_slide(cfg)
        slide_files.append(write_spatial_slide(slide, work)["slide"])
        st_files.append(write_st(work / f"{slide.slide_id}.h5ad", cfg, library_id=slide.slide_id))
    head = spatial_train(st_files, slide_files, bundle, work / "tile_head")
    test = [make_spatial_slide(base.model_copy(update={"seed": s})) for s in test_seeds]
    return evaluate_maps(bundle, test, work / "tile_head"), head
