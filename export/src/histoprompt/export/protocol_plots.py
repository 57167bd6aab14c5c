"""PNG plots of the SYNTHETIC evaluation protocol (see histoprompt.export.protocol_report)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from histoprompt.export.protocol_report import ProtocolReport


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path) -> Path:
    """Lay out, write `path` as PNG and free the figure (pyplot keeps every open one)."""
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def retrieval_plot(rep: ProtocolReport, path: Path) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, g in rep.retrieval.groupby("method"):
        ax.errorbar(g["k"], g["recall"], yerr=g["sd"], marker="o", capsize=3, label=method)
    chance = rep.retrieval.groupby("k")["chance"].mean()
    ax.plot(chance.index, chance.values, "k--", label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel("Recall@k (test folds, mean ± sd)")
    ax.set_title("SYNTHETIC retrieval vs k")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def r2_plot(rep: ProtocolReport, path: Path) -> Path:
    from histoprompt.export.protocol_report import PLANTED

    plt = _plt()
    wide = rep.r2.sort_values("mlp", ascending=False)
    fig, ax = plt.subplots(figsize=(13, 5))
    for i, name in enumerate(wide.index):
        if name in PLANTED:  # background shading: morphologically grounded (planted) programs
            ax.axvspan(i - 0.5, i + 0.5, color="#e8f0ff", zorder=0)
    wide.plot.bar(ax=ax, width=0.85, zorder=2)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.axhline(0.5, color="grey", linewidth=0.5, linestyle=":")
    ax.set_ylim(-0.5, 1.0)
    ax.set_ylabel("R2 (mean over test folds)")
    ax.set_title("SYNTHETIC per-Hallmark R2, sorted by aligned MLP; shaded = planted programs")
    ax.tick_params(axis="x", labelsize=6)
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def adaptation_plot(rep: ProtocolReport, path: Path) -> Path:
    from histoprompt.export.protocol_report import PLANTED

    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    for k, g in rep.adapt_retrieval.groupby("k"):
        a.plot(100 * g["fraction"], g["recall"], marker="o", label=f"Recall@{k}")
    a.set_xlabel("% of the new cohort's adaptation half used for fine-tuning")
    a.set_ylabel("Recall@k (held-out half)")
    a.legend(fontsize=7)
    r2 = rep.adapt_r2[rep.adapt_r2["gene_set"].isin(PLANTED)]
    for name, g in r2.groupby("gene_set"):
        b.plot(100 * g["fraction"], g["r2"], marker=".", label=str(name).replace("HALLMARK_", ""))
    b.set_xlabel("% used for fine-tuning")
    b.set_ylabel("R2 (Soft-kNN, held-out half)")
    b.legend(fontsize=6)
    fig.suptitle("SYNTHETIC domain adaptation")
    return _save(plt, fig, path)


def fewshot_plot(rep: ProtocolReport, path: Path) -> Path:
    plt = _plt()
    few = rep.result.fewshot.groupby(["method", "program", "k"])["bal_acc"].mean().reset_index()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (method, program), g in few.groupby(["method", "program"]):
        style = "-" if method == "aligned" else ":"
        ax.plot(g["k"], g["bal_acc"], style, marker="o", label=f"{method} {program}")
    ax.axhline(0.5, color="black", linewidth=0.5)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("labelled patients per class (k)")
    ax.set_ylabel("balanced accuracy (test folds)")
    ax.set_title("SYNTHETIC few-shot prototypes")
    ax.legend(fontsize=6)
    return _save(plt, fig, path)


def _umap_2d(x: NDArray[Any], seed: int) -> NDArray[Any]:
    """Seeded UMAP of standardised rows (a fixed random_state also makes it single-threaded,
    so the plot is reproducible)."""
    import warnings

    with warnings.catch_warnings():  # umap warns at import that TensorFlow is absent
        warnings.simplefilter("ignore", ImportWarning)
        import umap

    z = (x - x.mean(0)) / x.std(0).clip(1e-9)
    reducer = umap.UMAP(n_neighbors=min(15, len(z) - 1), random_state=seed, init="random")
    out: NDArray[Any] = reducer.fit_transform(z)
    return out


def embedding_plot(rep: ProtocolReport, path: Path) -> Path:
    """UMAP of slide and RNA embeddings before (frozen) and after alignment, by cohort."""

    from histoprompt.export.evaluation_curves import overall_model
    from histoprompt.export.evaluation_protocol import embed_aligned

    plt = _plt()
    model, _ = overall_model(rep.sites[0], rep.train)
    frozen = [(s.pooled(), s.rna) for s in rep.sites]
    aligned = [embed_aligned(model, s) for s in rep.sites]
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for row, (title, pairs) in enumerate((("frozen", frozen), ("aligned", aligned))):
        for col, side in enumerate(("slide", "RNA")):
            x = np.concatenate([p[col] for p in pairs])
            xy = _umap_2d(x, rep.train.seed)
            start = 0
            for s, p in zip(rep.sites, pairs, strict=True):
                n = p[col].shape[0]
                axes[row, col].scatter(*xy[start : start + n].T, s=5, label=f"cohort {s.name}")
                start += n
            axes[row, col].set_title(f"{side}, {title}")
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("SYNTHETIC UMAP by cohort, before and after alignment")
    return _save(plt, fig, path)


def write_plots(rep: ProtocolReport, out: Path) -> list[Path]:
    return [
        retrieval_plot(rep, out / "retrieval_vs_k.png"),
        r2_plot(rep, out / "r2_per_hallmark_sorted.png"),
        adaptation_plot(rep, out / "domain_adaptation.png"),
        fewshot_plot(rep, out / "few_shot.png"),
        embedding_plot(rep, out / "embeddings_umap.png"),
    ]
