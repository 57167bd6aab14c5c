"""`histoprompt-export evaluate --report DIR`: the protocol's Markdown report with PNG plots.

Runs the evaluation protocol (histoprompt.export.evaluation_protocol) on SYNTHETIC site
cohorts, then the domain-adaptation curve (histoprompt.export.evaluation_curves), and writes
report.md, CSV tables and plots: retrieval against k per method, per-Hallmark R2 bars sorted
by the aligned MLP (as Winter et al. sort theirs), domain-adaptation and few-shot curves and a
UMAP (umap-learn, seeded) of slide and RNA embeddings before and after alignment coloured by
cohort. Every figure is held-out: test folds, or the
new cohort's held-out half. Labelled SYNTHETIC throughout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from histoprompt.export.alignment_training import TrainConfig
from histoprompt.export.cohort import PROGRAMS, CohortConfig
from histoprompt.export.evaluation_protocol import CohortEmbeddings, ProtocolResult

ALIGNED = ("soft_knn_in_cohort", "soft_knn_cross_cohort", "ridge", "mlp")
PLANTED = {h: p.name for p in PROGRAMS for h in p.hallmarks}
UNWHITENED = "ridge_unwhitened_tiles"


@dataclass(frozen=True)
class ProtocolSettings:
    """Sizes of the SYNTHETIC run (bench: a few minutes on two shared cores)."""

    sizes: tuple[int, ...] = (240, 60, 60)
    min_tiles: int = 12
    max_tiles: int = 24
    n_splits: int = 5
    seed: int = 0
    n_boot: int = 200
    # The served demo's InfoNCE batch. A full batch (256) was measured too: immune R2 0.52 ->
    # 0.66 on fold 0, but 0.376 -> 0.368 over the five folds, so the demo's setting stays.
    batch_size: int = TrainConfig().batch_size

    def train_config(self) -> TrainConfig:
        return TrainConfig(seed=self.seed, batch_size=self.batch_size)


@dataclass(frozen=True)
class ProtocolReport:
    result: ProtocolResult
    retrieval: pd.DataFrame  # method, k: mean, sd, chance
    r2: pd.DataFrame  # gene_set x method: mean over folds
    r2_sd: pd.DataFrame
    planted: pd.DataFrame
    tests: pd.DataFrame  # Wilcoxon comparisons
    boot: pd.DataFrame  # bootstrap CI of the median R2 per method
    adapt_retrieval: pd.DataFrame
    adapt_r2: pd.DataFrame
    sites: list[CohortEmbeddings]
    seconds: dict[str, float]
    train: TrainConfig


def retrieval_summary(retrieval: pd.DataFrame) -> pd.DataFrame:
    per_fold = retrieval.groupby(["method", "k", "fold"])[["recall", "chance"]].mean()
    out = per_fold.groupby(["method", "k"]).agg(
        recall=("recall", "mean"), sd=("recall", "std"), chance=("chance", "mean")
    )
    return out.reset_index()


def _paired_test(comparison: str, d: pd.Series) -> dict[str, Any]:
    """One row of `wilcoxon_tests`: the signed-rank test of paired differences `d` (p = 1
    when every difference is 0, where scipy's test is undefined)."""
    from scipy.stats import wilcoxon

    p = float(wilcoxon(d).pvalue) if np.any(d != 0) else 1.0
    return {"comparison": comparison, "pairs": len(d), "median_diff": float(d.median()), "p": p}


def wilcoxon_tests(result: ProtocolResult) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests across folds and k / gene sets."""
    rows = []
    ret = result.retrieval.set_index(["fold", "direction", "k", "method"])["recall"].unstack()
    for base in ("zero_shot", "cca", "linear_probe", "no_rna_encoder"):
        if base in ret:
            rows.append(_paired_test(f"retrieval aligned vs {base}", ret["aligned"] - ret[base]))
    r2 = result.pathways.set_index(["fold", "gene_set", "method"])["r2"].unstack()
    for a, b in (
        ("mlp", "linear_probe"),
        ("ridge", "linear_probe"),
        ("soft_knn_cross_cohort", "soft_knn_in_cohort"),
        ("soft_knn_in_cohort", "no_rna_encoder_soft_knn"),
        ("ridge", UNWHITENED),
    ):
        if a in r2 and b in r2:
            rows.append(_paired_test(f"R2 {a} vs {b}", (r2[a] - r2[b]).dropna()))
    return pd.DataFrame(rows)


def bootstrap_median_r2(result: ProtocolResult, n_boot: int, seed: int) -> pd.DataFrame:
    """95 % bootstrap CI (patients resampled) of the median over sets of out-of-fold R2."""
    y = result.targets.to_numpy(np.float64)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, y.shape[0], y.shape[0]) for _ in range(n_boot)]

    def median_r2(pred: np.ndarray, rows: np.ndarray) -> float:
        t, p = y[rows], pred[rows]
        sst = ((t - t.mean(0)) ** 2).sum(0)
        return float(np.median(1 - ((t - p) ** 2).sum(0) / np.where(sst > 0, sst, np.nan)))

    rows = []
    for method, pred in result.oof.items():
        stats = np.array([median_r2(pred, d) for d in draws])
        rows.append(
            {
                "method": method,
                "median_r2": median_r2(pred, np.arange(y.shape[0])),
                "ci_low": float(np.nanpercentile(stats, 2.5)),
                "ci_high": float(np.nanpercentile(stats, 97.5)),
            }
        )
    return pd.DataFrame(rows)


def planted_table(r2: pd.DataFrame, r2_sd: pd.DataFrame) -> pd.DataFrame:
    """Each planted program's linked Hallmarks: held-out R2 of the best aligned method."""
    rows = []
    for gene_set, program in PLANTED.items():
        methods = [m for m in ALIGNED if m in r2.columns]
        best = max(methods, key=lambda m: float(r2.loc[gene_set, m]))
        rows.append(
            {
                "program": program,
                "gene_set": gene_set,
                "best_method": best,
                "r2": float(r2.loc[gene_set, best]),
                "sd": float(r2_sd.loc[gene_set, best]),
                "linear_probe": float(r2.loc[gene_set].get("linear_probe", np.nan)),
                "unwhitened": float(r2.loc[gene_set].get(UNWHITENED, np.nan)),
            }
        )
    out = pd.DataFrame(rows)
    out["reaches_0.5"] = out["r2"] >= 0.5
    return out


def run_protocol_report(settings: ProtocolSettings, cache_dir: Path) -> ProtocolReport:
    from histoprompt.export.evaluation_curves import (
        adaptation_curve,
        overall_model,
        site_embeddings,
    )
    from histoprompt.export.evaluation_protocol import run_folds

    t0 = time.perf_counter()
    cfg = CohortConfig(
        n_patients=sum(settings.sizes),
        min_tiles=settings.min_tiles,
        max_tiles=settings.max_tiles,
        seed=settings.seed,
    )
    sites = site_embeddings(
        cfg, len(settings.sizes), cache_dir, seed=settings.seed, sizes=settings.sizes
    )
    t1 = time.perf_counter()
    train = settings.train_config()
    result = run_folds(sites[0], sites[1:], train, n_splits=settings.n_splits)
    t2 = time.perf_counter()
    model, _ = overall_model(sites[0], train)
    adapt_ret, adapt_r2 = adaptation_curve(model, sites[:-1], sites[-1], train)
    t3 = time.perf_counter()
    r2 = result.pathways.groupby(["gene_set", "method"])["r2"].mean().unstack()
    r2_sd = result.pathways.groupby(["gene_set", "method"])["r2"].std().unstack()
    return ProtocolReport(
        result=result,
        retrieval=retrieval_summary(result.retrieval),
        r2=r2,
        r2_sd=r2_sd,
        planted=planted_table(r2, r2_sd),
        tests=wilcoxon_tests(result),
        boot=bootstrap_median_r2(result, settings.n_boot, settings.seed),
        adapt_retrieval=adapt_ret,
        adapt_r2=adapt_r2,
        sites=sites,
        seconds={"embed": t1 - t0, "folds": t2 - t1, "adaptation": t3 - t2},
        train=train,
    )


def _md(frame: pd.DataFrame, digits: int = 3) -> str:
    cols = [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [
            f"{v:.{digits}g}"
            if isinstance(v, float) and abs(v) < 1e-3 and v != 0
            else f"{v:.{digits}f}"
            if isinstance(v, float)
            else str(v)
            for v in row
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_markdown(rep: ProtocolReport, settings: ProtocolSettings) -> list[str]:
    res = rep.result
    n_test = sorted({len(r.test) for r in res.records})
    ret = rep.retrieval.pivot(index="method", columns="k", values="recall")
    chance = rep.retrieval.groupby("k")["chance"].mean()
    ret.loc["chance"] = chance
    few = res.fewshot.groupby(["method", "k"])["bal_acc"].mean().unstack()
    fr = rep.adapt_retrieval.pivot(index="fraction", columns="k", values="recall")
    fr2 = rep.adapt_r2[rep.adapt_r2["gene_set"].isin(PLANTED)].pivot(
        index="fraction", columns="gene_set", values="r2"
    )
    order = rep.r2.sort_values("mlp", ascending=False)
    return [
        "# SYNTHETIC evaluation protocol",
        "",
        "SYNTHETIC site cohorts "
        + ", ".join(f"{s.name} ({len(s.patient_ids)} patients)" for s in rep.sites)
        + " with stain/scanner and expression batch effects; UNTRAINED `tiny` tile encoder and "
        f"RNA encoder. {settings.n_splits}-fold CV by patient on cohort A; the alignment is "
        f"retrained inside every fold (InfoNCE batch {rep.train.batch_size}, early stopping on a "
        "patient-level slice of the fold's "
        f"training patients), every figure is on test-fold patients ({n_test} per fold); "
        "Soft-kNN at the "
        f"served k / temperature. No-leak check passed on {len(res.records)} folds. Wall time: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in rep.seconds.items())
        + ".",
        "",
        "## Retrieval: mean Recall@k over folds and both directions (test folds)",
        "",
        _md(ret.reset_index()),
        "",
        "## Planted programs: held-out R2 of their linked Hallmarks (best aligned method)",
        "",
        _md(rep.planted),
        "",
        "`linear_probe`: ridge on the frozen encoder's mean-pooled tile embeddings, the same "
        "test folds. A planted set below 0.5 for the aligned model but not for the probe is "
        "information the frozen features hold and the contrastive alignment (on "
        f"{len(rep.sites[0].patient_ids) * (settings.n_splits - 1) // settings.n_splits} "
        "non-test patients per fold, a quarter of them for early stopping) does not keep. "
        "The fix in use: the alignment whitens tile embeddings with its training patients' "
        "mean and covariance (PCA whitening, `TrainConfig.whiten_tiles`, stored with the "
        "weights and served). `unwhitened`: the same folds with the alignment trained on the "
        "raw embeddings (ridge on its slide embeddings); on raw inputs it follows the untrained "
        "encoder's few high-variance directions and drops low-variance ones that carry planted "
        "programs. The tile encoder stays the UNTRAINED "
        "`tiny`; no pre-training on SYNTHETIC tiles, no change of the tile renderer.",
        "",
        "## Median per-Hallmark R2: out-of-fold, 95 % bootstrap CI (patients resampled)",
        "",
        _md(rep.boot),
        "",
        "## Wilcoxon signed-rank tests (paired over folds x k x direction, or folds x sets)",
        "",
        _md(rep.tests),
        "",
        "## Few-shot prototype classification (balanced accuracy, mean over programs, folds, "
        "20 draws)",
        "",
        _md(few.reset_index()),
        "",
        f"## Domain adaptation to cohort {rep.sites[-1].name} (held-out half), Recall@k",
        "",
        _md(fr.reset_index()),
        "",
        "Per-Hallmark R2 (Soft-kNN, reference: the other cohorts + the fine-tuning fraction):",
        "",
        _md(fr2.reset_index()),
        "",
        "## Per-Hallmark R2 (mean over test folds), sorted by the aligned MLP",
        "",
        _md(order.reset_index()),
        "",
    ]


def write_protocol_report(rep: ProtocolReport, settings: ProtocolSettings, out: Path) -> list[Path]:
    from histoprompt.export.protocol_plots import write_plots

    out.mkdir(parents=True, exist_ok=True)
    rep.result.retrieval.to_csv(out / "protocol_retrieval.csv", index=False)
    rep.result.pathways.to_csv(out / "protocol_pathways.csv", index=False)
    rep.result.fewshot.to_csv(out / "fewshot.csv", index=False)
    rep.adapt_retrieval.to_csv(out / "adaptation_retrieval.csv", index=False)
    rep.adapt_r2.to_csv(out / "adaptation_pathways.csv", index=False)
    pngs = write_plots(rep, out)
    md = report_markdown(rep, settings) + spatial_markdown(out)
    md += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in pngs] + [""]
    (out / "report.md").write_text("\n".join(md))
    return [out / "report.md", *pngs]


SPATIAL_TITLE = "## Spatial pathway maps (SYNTHETIC)"
SPATIAL_CSV, SPATIAL_SUMMARY_CSV = "spatial_validation.csv", "spatial_summary.csv"


def spatial_markdown(out: Path, table: pd.DataFrame | None = None) -> list[str]:
    """The report's spatial section from `run_validation`'s table (or `out`'s CSV written by
    tests/perf/bench_spatial.py); [] when neither is there."""
    from histoprompt.export.spatial_eval import summarise

    if table is None:
        if not (out / SPATIAL_CSV).is_file():
            return []
        table = pd.read_csv(out / SPATIAL_CSV)
    summary = summarise(table).rename(columns=lambda c: f"mean_{c}")
    summary["slides"] = table.groupby("method")["slide"].nunique()
    n = table.drop_duplicates("slide")["n_tiles"]
    per_program = [
        table.pivot_table(index="program", columns="method", values=v, aggfunc="mean")
        .reindex(columns=list(summary.index))
        .reset_index()
        for v in ("spearman", "auroc")
    ]
    return [
        SPATIAL_TITLE,
        "",
        "Tile-level maps of each planted program's first Hallmark set on SYNTHETIC planted "
        "slides (`histoprompt.export.spatial_eval.run_validation`), held out by slide: scored "
        f"on {table['slide'].nunique()} slides ({int(n.min())}-{int(n.max())} tissue tiles "
        "each) that the ST head was not trained on. Spearman against the planted per-tile "
        "field, AUROC of region membership (field > 0). Methods: `one_tile_bag` (baseline), "
        "`context` (served, `tile_context`), `st_head` (ST-trained tile head). Tables: "
        f"[{SPATIAL_CSV}]({SPATIAL_CSV}), [{SPATIAL_SUMMARY_CSV}]({SPATIAL_SUMMARY_CSV}).",
        "",
        _md(summary.reset_index()),
        "",
        "Mean Spearman per program:",
        "",
        _md(per_program[0]),
        "",
        "Mean AUROC per program:",
        "",
        _md(per_program[1]),
        "",
    ]


def write_spatial_section(table: pd.DataFrame, out: Path) -> Path:
    """Write the spatial CSVs to `out` and put the section into `out`/report.md in place
    (before `## Plots` the first time), other sections kept as they are."""
    import re

    from histoprompt.export.spatial_eval import summarise

    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / SPATIAL_CSV, index=False)
    summarise(table).to_csv(out / SPATIAL_SUMMARY_CSV)
    section = "\n".join(spatial_markdown(out, table)) + "\n"
    path = out / "report.md"
    doc = path.read_text() if path.is_file() else "# SYNTHETIC evaluation protocol\n\n"
    pattern = re.compile(rf"^{re.escape(SPATIAL_TITLE)}[ \t]*\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(doc):
        doc = pattern.sub(lambda _: section, doc, count=1)
    elif "\n## Plots\n" in doc:
        doc = doc.replace("\n## Plots\n", "\n" + section + "## Plots\n", 1)
    else:
        doc = doc.rstrip("\n") + "\n\n" + section
    path.write_text(doc)
    return path


def protocol_command(out: Path, seed: int = 0) -> int:
    """CLI body of `histoprompt-export evaluate --report DIR`; prints the headline figures."""
    import typer

    from histoprompt.export.bundle import _cache_root

    settings = ProtocolSettings(seed=seed)
    rep = run_protocol_report(settings, _cache_root(None) / "tile_embeddings")
    files = write_protocol_report(rep, settings, out)
    r = rep.retrieval.pivot(index="method", columns="k", values="recall")
    typer.echo(
        "SYNTHETIC protocol: Recall@5 "
        + ", ".join(f"{m} {v:.3f}" for m, v in r[5].items())
        + f"; planted programs at R2 >= 0.5: {int(rep.planted['reaches_0.5'].sum())}"
        f"/{len(rep.planted)}"
    )
    for f in files:
        typer.echo(str(f))
    return 0
