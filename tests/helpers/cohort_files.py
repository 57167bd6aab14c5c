"""A SYNTHETIC cohort's training inputs as `histoprompt-export train` and `finetune` read them
from a folder: emb/<slide_id>.npy tile-embedding bags, slides.csv, expr.parquet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.export.cohort import SyntheticCohort, SyntheticSlide, write_expression


def cohort_args(folder: Path) -> list[str]:
    """The inputs' options: --embeddings, --slides and --expression under `folder`."""
    return ["--embeddings", str(folder / "emb"), "--slides", str(folder / "slides.csv"),
            "--expression", str(folder / "expr.parquet")]  # fmt: skip


def write_cohort_files(
    cohort: SyntheticCohort,
    folder: Path,
    bag: Callable[[SyntheticSlide], NDArray[Any]],
    extra_slide_rows: Sequence[str] = (),
) -> list[str]:
    """`bag(slide)` saved per slide, the slides table (plus `extra_slide_rows`, e.g. a slide
    without embeddings) and the expression table; returns cohort_args(folder)."""
    (folder / "emb").mkdir(parents=True)
    for slide in cohort.slides:
        np.save(folder / "emb" / f"{slide.slide_id}.npy", bag(slide))
    rows = ["slide_id,patient_id"] + [f"{s.slide_id},{s.patient_id}" for s in cohort.slides]
    (folder / "slides.csv").write_text("\n".join([*rows, *extra_slide_rows]) + "\n")
    write_expression(cohort, folder / "expr.parquet")
    return cohort_args(folder)
