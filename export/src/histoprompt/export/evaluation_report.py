"""`histoprompt-export evaluate`: retrieval and per-Hallmark regression, as CSV, markdown, PNG.

Inputs: an `.npz` of paired, aligned embeddings (`slide` [N,E], `rna` [N,E], `patient_ids`
[N]; optional `baseline_slide`/`baseline_rna` from the unaligned model, and `targets` [N,K]
with `target_names` [K]) plus, when it holds no targets, `--expression` (the RNA side,
samples keyed like patient_ids) from which the Hallmark ssGSEA targets are computed.
`--synthetic` evaluates SYNTHETIC numpy pairs instead (histoprompt.core.evaluation_metrics), and
`--report DIR` runs the evaluation protocol on SYNTHETIC site cohorts instead (protocol_report).
`--bundle DIR` the demo bundle of `histoprompt-export demo-bundle` on its SYNTHETIC cohort:
retrieval and per-Hallmark CV on the patients held out from alignment training, the
untrained alignment module (same seed) as the unaligned baseline.

Example:

    histoprompt-export evaluate --synthetic --out artifacts/eval
    histoprompt-export evaluate --report artifacts/protocol
    histoprompt-export evaluate --bundle .cache/histoprompt/bundles/<version> --out artifacts/eval
    histoprompt-export evaluate --pairs pairs.npz --expression expr.parquet --out artifacts/eval
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from histoprompt.export.cli_errors import exit_on_error, fail

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from histoprompt.core.modelspec import ModelCard
    from histoprompt.export.alignment import AlignmentConfig
    from histoprompt.export.cohort import SyntheticCohort
    from histoprompt.export.rna import GeneContract

app = typer.Typer(
    name="evaluate",
    help="Retrieval Recall@k and per-Hallmark R2/Pearson/Spearman (5-fold CV by patient).",
    pretty_exceptions_show_locals=False,
)

RETRIEVAL_CSV = "retrieval.csv"
PATHWAYS_CSV = "pathways.csv"
REPORT_MD = "report.md"
R2_PNG = "r2_per_hallmark.png"


@dataclass(frozen=True)
class EvalInputs:
    slide: np.ndarray
    rna: np.ndarray
    patient_ids: list[str]
    targets: pd.DataFrame
    baseline_slide: np.ndarray | None
    baseline_rna: np.ndarray | None
    synthetic: bool
    source: str
    retrieval_rows: np.ndarray | None = None  # rows held out from alignment training


@dataclass(frozen=True)
class EvalReport:
    retrieval: pd.DataFrame
    pathways: pd.DataFrame
    inputs: EvalInputs


def load_pairs(pairs: Path, expression: Path | None) -> EvalInputs:
    """Read an .npz of paired embeddings (+ targets, or an expression table to score)."""
    import numpy as np
    import pandas as pd

    from histoprompt.core.errors import InvalidInputError

    try:
        with np.load(pairs, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except ValueError as err:
        raise InvalidInputError(
            f"{pairs}: {err}; object arrays are refused (no pickle): save ids as str arrays"
        ) from err
    except OSError as err:
        raise InvalidInputError(f"cannot read {pairs}: {err}") from err
    for key in ("slide", "rna", "patient_ids"):
        if key not in data:
            raise InvalidInputError(f"{pairs} lacks the array {key!r}")
    ids = [str(p) for p in data["patient_ids"]]
    if "targets" in data:
        names = [str(n) for n in data.get("target_names", range(data["targets"].shape[1]))]
        targets = pd.DataFrame(data["targets"], columns=names)
    elif expression is not None:
        targets = hallmark_targets(expression, ids)
    else:
        raise InvalidInputError(f"{pairs} has no 'targets'; pass --expression to compute them")
    return EvalInputs(
        slide=data["slide"],
        rna=data["rna"],
        patient_ids=ids,
        targets=targets,
        baseline_slide=data.get("baseline_slide"),
        baseline_rna=data.get("baseline_rna"),
        synthetic=bool(data.get("synthetic", False)),
        source=str(pairs),
    )


def hallmark_targets(expression: Path, sample_ids: list[str]) -> pd.DataFrame:
    """Raw Hallmark ssGSEA scores of the expression rows named by `sample_ids` (in order)."""
    from histoprompt.core.errors import InvalidInputError
    from histoprompt.core.genesets import load_hallmark
    from histoprompt.core.reference_build import read_table
    from histoprompt.core.ssgsea import ssgsea_frame

    expr = read_table(expression)
    missing = [s for s in dict.fromkeys(sample_ids) if s not in expr.index]
    if missing:
        raise InvalidInputError(f"{len(missing)} paired samples are not in {expression}")
    hallmark = load_hallmark()
    scores = ssgsea_frame(expr, {n: hallmark[n].genes for n in hallmark}, min_size=5)
    return scores.loc[sample_ids].reset_index(drop=True)


def synthetic_inputs(n_patients: int, seed: int) -> EvalInputs:
    from histoprompt.core.evaluation_metrics import synthetic_pairs

    p = synthetic_pairs(n_patients, seed=seed)
    return EvalInputs(
        p.slide,
        p.rna,
        list(p.patient_ids),
        p.targets,
        p.baseline_slide,
        p.baseline_rna,
        synthetic=True,
        source=f"SYNTHETIC numpy pairs (n_patients={n_patients}, seed={seed})",
    )


def bundle_inputs(bundle: Path, seed: int = 0) -> EvalInputs:
    """Pairs from a demo bundle (SYNTHETIC cohort, trained and untrained alignment)."""
    import numpy as np
    import torch

    from histoprompt.core.errors import InvalidInputError
    from histoprompt.export.alignment import AlignmentModel, RnaEmbedExport, SlideEmbedExport
    from histoprompt.export.alignment_training import load_alignment, split_by_patient
    from histoprompt.export.bundle import demo_card, demo_config
    from histoprompt.export.cohort import make_cohort
    from histoprompt.export.embedding import cached_slide_embeddings
    from histoprompt.export.encoders import load_encoder
    from histoprompt.export.rna import small_rna_encoder

    card, contract, align_cfg = _read_bundle(bundle)
    config = demo_config(seed)
    if demo_card(config).version != card.version:
        raise InvalidInputError(
            f"{bundle} holds model {card.version}, demo seed {seed} gives "
            f"{demo_card(config).version}; pass the seed the bundle was built with"
        )
    cohort = make_cohort(config.cohort)
    encoder = load_encoder(config.encoder, seed=config.seed)
    first: dict[str, int] = {}
    for i, cohort_slide in enumerate(cohort.slides):
        first.setdefault(cohort_slide.patient_id, i)
    slides = [cohort.slides[i] for i in first.values()]
    bags = cached_slide_embeddings(
        encoder, [(s.slide_id, s.tiles) for s in slides], bundle.parent.parent / "tile_embeddings"
    )
    rna_encoder = small_rna_encoder(contract, seed=config.seed, embed_dim=config.rna_embed_dim)
    expression = contract.align(cohort.expression, cohort.genes).values
    row = cohort.patient_index()
    patients = [s.patient_id for s in slides]
    trained = load_alignment(bundle / "alignment")
    torch.manual_seed(config.train.seed)  # the training run's own unaligned baseline
    untrained = AlignmentModel(align_cfg).eval()

    def embed(model: AlignmentModel) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            slide_fn, rna_fn = SlideEmbedExport(model).eval(), RnaEmbedExport(rna_encoder, model)
            s = np.concatenate([slide_fn(torch.from_numpy(b))[0].numpy() for b in bags])
            r = rna_fn.eval()(torch.from_numpy(expression[[row[p] for p in patients]])).numpy()
        return s, r

    slide, rna = embed(trained)
    base_slide, base_rna = embed(untrained)
    _, val = split_by_patient(patients, config.train.val_fraction, config.train.seed)
    held_out = np.array([p in set(val) for p in patients])
    return EvalInputs(
        slide,
        rna,
        patients,
        _cohort_hallmark_targets(cohort, patients),
        base_slide,
        base_rna,
        synthetic=True,
        source=(
            f"demo bundle {card.version} (SYNTHETIC cohort, UNTRAINED tile encoder); retrieval "
            f"and CV on the {int(held_out.sum())} patients held out from alignment training"
        ),
        retrieval_rows=held_out,
    )


def _read_bundle(bundle: Path) -> tuple[ModelCard, GeneContract, AlignmentConfig]:
    from histoprompt.core.errors import InvalidInputError
    from histoprompt.core.modelspec import ModelCard
    from histoprompt.export.alignment import AlignmentConfig
    from histoprompt.export.rna import GeneContract

    try:
        card = ModelCard.model_validate_json((bundle / "model_card.json").read_text())
        contract = GeneContract.model_validate_json((bundle / "gene_contract.json").read_text())
        align_cfg = AlignmentConfig.model_validate_json(
            (bundle / "alignment" / "alignment_config.json").read_text()
        )
    except (OSError, ValueError) as err:
        raise InvalidInputError(f"{bundle} is not a demo bundle: {err}") from err
    return card, contract, align_cfg


def _cohort_hallmark_targets(cohort: SyntheticCohort, patients: list[str]) -> pd.DataFrame:
    """Hallmark ssGSEA scores of the cohort's expression, one row per patient in order."""
    import pandas as pd

    from histoprompt.core.genesets import load_hallmark
    from histoprompt.core.ssgsea import ssgsea_frame

    expr = pd.DataFrame(cohort.expression, index=list(cohort.patient_ids), columns=cohort.genes)
    hallmark = load_hallmark()
    targets = ssgsea_frame(expr, {n: hallmark[n].genes for n in hallmark}, min_size=5)
    return targets.loc[patients].reset_index(drop=True)


def run_evaluation(inputs: EvalInputs, methods: list[str], n_splits: int = 5) -> EvalReport:
    import numpy as np

    from histoprompt.core.evaluation_metrics import pathway_cv_table, retrieval_table

    n = inputs.slide.shape[0]
    mask = inputs.retrieval_rows
    rows = np.arange(n) if mask is None else np.flatnonzero(mask)

    def pick(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    retrieval = retrieval_table(
        inputs.slide[rows],
        inputs.rna[rows],
        baseline_slide=pick(inputs.baseline_slide),
        baseline_rna=pick(inputs.baseline_rna),
    )
    # Only rows the alignment never saw: CV within them (the protocol retrains per fold).
    pathways = pathway_cv_table(
        inputs.slide[rows],
        inputs.rna[rows],
        inputs.targets.iloc[rows].reset_index(drop=True),
        [inputs.patient_ids[i] for i in rows],
        methods=methods,
        n_splits=n_splits,
    )
    return EvalReport(retrieval, pathways, inputs)


def _markdown_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in frame.itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def retrieval_gain(retrieval: pd.DataFrame) -> dict[str, Any]:
    """Mean Recall@{1,5,10} over both directions, and its ratio to baseline and chance."""
    aligned = float(retrieval["recall"].mean())
    base = float(retrieval["baseline"].mean())
    chance = float(retrieval["random"].mean())
    return {
        "mean_recall": aligned,
        "mean_recall_baseline": base,
        "mean_recall_random": chance,
        "gain_vs_baseline": aligned / base if base > 0 else float("nan"),
        "gain_vs_random": aligned / chance,
    }


def write_report(report: EvalReport, out: Path) -> list[Path]:
    """CSV + markdown + PNG bar plot of per-Hallmark R2; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    label = "SYNTHETIC " if report.inputs.synthetic else ""
    report.retrieval.to_csv(out / RETRIEVAL_CSV, index=False)
    report.pathways.to_csv(out / PATHWAYS_CSV, index=False)
    gain = retrieval_gain(report.retrieval)
    wide = report.pathways.pivot(index="gene_set", columns="method", values="r2")
    order_by = "mlp" if "mlp" in wide.columns else wide.columns[0]
    wide = wide.sort_values(order_by, ascending=False)
    summary = report.pathways.groupby("method")[["r2", "pearson", "spearman"]].median()
    md = [
        f"# {label}evaluation",
        "",
        f"Source: {report.inputs.source}. N = {int(report.retrieval['n'].iloc[0])} pairs, "
        f"{report.inputs.targets.shape[1]} Hallmark sets, 5-fold CV split by patient.",
        "",
        "## Retrieval",
        "",
        _markdown_table(report.retrieval.round(4)),
        "",
        f"Mean Recall@{{1,5,10}} (both directions): aligned {gain['mean_recall']:.3f}, "
        f"unaligned baseline {gain['mean_recall_baseline']:.3f}, chance "
        f"{gain['mean_recall_random']:.3f}; gain vs baseline {gain['gain_vs_baseline']:.1f}x, "
        f"vs chance {gain['gain_vs_random']:.1f}x.",
        "",
        "## Per-Hallmark regression (median over sets)",
        "",
        _markdown_table(summary.reset_index().round(3)),
        "",
        "## Per-Hallmark R2",
        "",
        _markdown_table(wide.reset_index().round(3)),
        "",
    ]
    (out / REPORT_MD).write_text("\n".join(md))
    fig, ax = plt.subplots(figsize=(12, 6))
    wide.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("R2 (5-fold CV by patient)")
    ax.set_xlabel("")
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_title(f"{label}per-Hallmark R2")
    ax.tick_params(axis="x", labelsize=6)
    fig.tight_layout()
    fig.savefig(out / R2_PNG, dpi=110)
    plt.close(fig)
    return [out / f for f in (RETRIEVAL_CSV, PATHWAYS_CSV, REPORT_MD, R2_PNG)]


@app.callback(invoke_without_command=True)
def evaluate(
    out: Annotated[Path | None, typer.Option(help="folder for CSV, markdown and PNG")] = None,
    report: Annotated[Path | None, typer.Option(help="SYNTHETIC protocol report into DIR")] = None,
    pairs: Annotated[
        Path | None, typer.Option(help=".npz with slide, rna, patient_ids (+ baseline_*, targets)")
    ] = None,
    expression: Annotated[
        Path | None, typer.Option(help="expression table for Hallmark targets (parquet/csv/h5ad)")
    ] = None,
    synthetic: Annotated[
        bool, typer.Option(help="evaluate SYNTHETIC numpy pairs instead of --pairs")
    ] = False,
    bundle: Annotated[
        Path | None, typer.Option(help="demo bundle dir (SYNTHETIC cohort, trained alignment)")
    ] = None,
    n_patients: Annotated[int, typer.Option(help="SYNTHETIC cohort size")] = 400,
    seed: Annotated[int, typer.Option(help="SYNTHETIC seed")] = 0,
    methods: Annotated[str, typer.Option(help="comma list of soft_knn, ridge, mlp")] = (
        "soft_knn,ridge,mlp"
    ),
) -> None:
    """Evaluate paired embeddings: Recall@1/5/10 both ways, per-Hallmark R2/Pearson/Spearman."""

    if report is not None:
        from histoprompt.export.protocol_report import protocol_command

        raise typer.Exit(protocol_command(report, seed))
    if out is None:
        raise fail("give --out DIR (or --report DIR)")
    with exit_on_error():
        if synthetic:
            inputs = synthetic_inputs(n_patients, seed)
        elif bundle is not None:
            inputs = bundle_inputs(bundle, seed)
        elif pairs is not None:
            inputs = load_pairs(pairs, expression)
        else:
            raise fail("give --pairs FILE.npz, --bundle DIR or --synthetic")
        report = run_evaluation(inputs, [m.strip() for m in methods.split(",") if m.strip()])
    files = write_report(report, out)
    gain = retrieval_gain(report.retrieval)
    med = report.pathways.groupby("method")["r2"].median()
    typer.echo(
        f"{'SYNTHETIC ' if inputs.synthetic else ''}retrieval gain vs unaligned "
        f"{gain['gain_vs_baseline']:.1f}x, vs chance {gain['gain_vs_random']:.1f}x; "
        + ", ".join(f"median R2 {m} {v:.3f}" for m, v in med.items())
    )
    for f in files:
        typer.echo(str(f))
