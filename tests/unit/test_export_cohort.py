"""SYNTHETIC cohort: determinism, labels, latent-driven morphology and expression."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from histoprompt.export.cohort import (
    PROGRAMS,
    CohortConfig,
    make_cohort,
    mosaic,
    read_expression,
    render_tiles,
    write_cohort_metadata,
    write_expression,
)

SMALL = CohortConfig(n_patients=12, min_tiles=4, max_tiles=6, seed=3)


def test_cohort_is_deterministic_and_synthetic_ids_only() -> None:
    a, b = make_cohort(SMALL), make_cohort(SMALL)
    assert np.array_equal(a.expression, b.expression)
    assert all(np.array_equal(x.tiles, y.tiles) for x, y in zip(a.slides, b.slides, strict=True))
    assert all(p.startswith("SYN-") for p in a.patient_ids)
    assert a.slides[0].tiles.dtype == np.uint8 and a.slides[0].tiles.shape[1:] == (64, 64, 3)


def _program(name: str) -> int:
    return [p.name for p in PROGRAMS].index(name)


def test_morphology_follows_the_latents() -> None:
    rng = np.random.default_rng(0)
    low, high = np.zeros((20, len(PROGRAMS))), np.zeros((20, len(PROGRAMS)))
    low[:, _program("proliferation")], high[:, _program("proliferation")] = -2.5, 2.5
    dark_low = (render_tiles(low, 64, rng).mean(axis=-1) < 120).mean()
    dark_high = (render_tiles(high, 64, rng).mean(axis=-1) < 120).mean()
    assert dark_high > 2 * dark_low  # more nuclei -> more hematoxylin-dark pixels


def test_program_genes_follow_their_latent_more_than_other_genes() -> None:
    cohort = make_cohort(CohortConfig(n_patients=80, min_tiles=1, max_tiles=1, seed=1))
    genes = {g: i for i, g in enumerate(cohort.genes)}
    k = _program("immune")
    linked = [genes[g] for g in cohort.program_genes["immune"]]
    others = sorted(
        set(range(len(cohort.genes)))
        - {genes[g] for members in cohort.program_genes.values() for g in members}
    )
    z = cohort.latents[:, k]

    def mean_corr(idx: list[int]) -> float:
        x = cohort.expression[:, idx]
        x = (x - x.mean(0)) / (x.std(0) + 1e-9)
        return float(np.mean((x * ((z - z.mean()) / z.std())[:, None]).mean(0)))

    assert mean_corr(linked) > 0.4
    assert abs(mean_corr(others)) < 0.1


def test_files_are_labelled_synthetic(tmp_path: Path) -> None:
    cohort = make_cohort(SMALL)
    path = write_expression(cohort, tmp_path / "expression.parquet")
    meta = json.loads(pq.read_schema(path).metadata[b"histoprompt"])
    assert meta["synthetic"] is True
    ids, genes, values = read_expression(path)
    assert ids == list(cohort.patient_ids) and genes == list(cohort.genes)
    np.testing.assert_array_equal(values, cohort.expression)
    doc = json.loads(write_cohort_metadata(cohort, tmp_path).read_text())
    assert doc["synthetic"] is True and "SYNTHETIC" in doc["note"]
    assert len(doc["slides"]) == 12


def test_mosaic_places_tiles_on_background() -> None:
    tiles = np.zeros((5, 8, 8, 3), dtype=np.uint8)
    canvas = mosaic(tiles, columns=3, margin=1)
    assert canvas.shape == (4 * 8, 5 * 8, 3)
    assert canvas[:8].min() == 245 and (canvas == 0).all(axis=-1).sum() == 5 * 64


def test_invalid_config_is_refused() -> None:
    with pytest.raises(ValueError):
        CohortConfig(n_patients=1)


def test_cohort_files_are_readable_dicom_wsi_with_the_generated_tiles(tmp_path: Path) -> None:
    from wsidicom import WsiDicom

    from histoprompt.core.schemas import SeriesManifest
    from histoprompt.export.cohort_files import write_cohort_files

    cohort = make_cohort(SMALL)
    first = cohort.slides[0].slide_id
    files = write_cohort_files(cohort, tmp_path, mpp=1.0, slide_ids=[first])
    assert list(files.slides) == [first]
    manifest = SeriesManifest.model_validate_json(files.slides[first][-1].read_bytes())
    assert len(manifest.instances) == 2
    image = mosaic(cohort.slides[0].tiles)
    with WsiDicom.open(tmp_path / "slides" / first) as wsi:
        assert len(wsi.levels) == 2
        assert wsi.mpp.width == pytest.approx(1.0)
        region = np.asarray(
            wsi.read_region((0, 0), 0, (image.shape[1], image.shape[0])).convert("RGB")
        )
    assert np.abs(region.astype(int) - image).mean() < 6  # JPEG q95
