"""SYNTHETIC multi-site cohorts: one generator, several sites with their own batch effects.

Everything here is SYNTHETIC (see histoprompt.export.cohort). One cohort is generated with
`make_cohort` (so every site shares the same biology: program loadings, gene baselines),
then its patients are dealt to `n_sites` sites and each site gets

* a stain / scanner shift on the image side: per-channel gain and offset applied to every
  tile of the site's slides (a different H&E protocol and scanner colour response);
* a batch effect on the expression side: a per-gene offset plus a global scale of the
  log1p(TPM) values (a different library preparation / sequencing run).

Site 0 is the training cohort of `histoprompt-export evaluate --protocol`; the other sites
are the "other cohorts" of a cross-cohort reference and the new cohort of domain adaptation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from histoprompt.export.cohort import CohortConfig, SyntheticCohort, SyntheticSlide, make_cohort

SITE_NAMES = ("A", "B", "C", "D", "E", "F")


@dataclass(frozen=True)
class SiteEffect:
    """The batch effect of one SYNTHETIC site (zero for a site with `strength` 0)."""

    stain_gain: NDArray[Any]  # [3] multiplicative per RGB channel
    stain_offset: NDArray[Any]  # [3] additive per RGB channel
    gene_offset: NDArray[Any]  # [G] additive on log1p(TPM)
    expression_scale: float


def site_effect(n_genes: int, strength: float, rng: np.random.Generator) -> SiteEffect:
    return SiteEffect(
        stain_gain=1.0 + strength * rng.normal(0, 0.08, size=3),
        stain_offset=strength * rng.normal(0, 10.0, size=3),
        gene_offset=strength * rng.normal(0, 0.3, size=n_genes),
        expression_scale=float(1.0 + strength * rng.normal(0, 0.05)),
    )


def apply_stain(tiles: NDArray[Any], effect: SiteEffect) -> NDArray[Any]:
    shifted = tiles.astype(np.float32) * effect.stain_gain + effect.stain_offset
    out: NDArray[Any] = np.clip(shifted, 0, 255).astype(np.uint8)
    return out


def make_site_cohorts(
    config: CohortConfig,
    n_sites: int = 3,
    strength: float = 1.0,
    sizes: tuple[int, ...] | None = None,
) -> list[SyntheticCohort]:
    """`n_sites` SYNTHETIC cohorts of `sizes` patients (default: `n_patients // n_sites` each).

    Patient ids are `SYN-<site>-<n>`, slide ids `SYN-S<site>-<n>-<s>`; site 0 carries no
    batch effect (it is the reference frame), the others `strength` times the default.
    """
    if not 1 <= n_sites <= len(SITE_NAMES):
        raise ValueError(f"n_sites must be 1..{len(SITE_NAMES)}")
    full = make_cohort(config)
    rng = np.random.default_rng(config.seed + 7919)
    counts = sizes or (config.n_patients // n_sites,) * n_sites
    if len(counts) != n_sites or sum(counts) > config.n_patients or min(counts) < 1:
        raise ValueError(f"sizes {counts} do not fit {n_sites} sites of {config.n_patients}")
    starts = np.concatenate([[0], np.cumsum(counts)])
    by_patient: dict[str, list[SyntheticSlide]] = {}
    for slide in full.slides:
        by_patient.setdefault(slide.patient_id, []).append(slide)
    cohorts = []
    for s in range(n_sites):
        name = SITE_NAMES[s]
        rows = np.arange(starts[s], starts[s + 1])
        effect = site_effect(len(full.genes), strength if s else 0.0, rng)
        ids = {full.patient_ids[r]: f"SYN-{name}-{j:05d}" for j, r in enumerate(rows)}
        slides = tuple(
            SyntheticSlide(
                slide_id=f"SYN-S{name}-{j:05d}-{k}",
                patient_id=ids[full.patient_ids[r]],
                tiles=apply_stain(sl.tiles, effect),
            )
            for j, r in enumerate(rows)
            for k, sl in enumerate(by_patient[full.patient_ids[r]])
        )
        expr = full.expression[rows] * effect.expression_scale + effect.gene_offset
        cohorts.append(
            replace(
                full,
                patient_ids=tuple(ids.values()),
                latents=full.latents[rows],
                slides=slides,
                expression=np.clip(expr, 0.0, None).astype(np.float32),
            )
        )
    return cohorts
