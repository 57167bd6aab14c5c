"""`make bench` section "Evaluation (SYNTHETIC cohort)": the demo bundle's held-out retrieval,
per-Hallmark regression and ONNX parity, computed here and written to BENCHMARKS.md.

The README points at this section instead of quoting numbers, so every figure there is one
this script produced. Run: `uv run --frozen python -m tests.perf.bench_evaluate`.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from histoprompt.export.bundle import demo_config, ensure_bundle
from histoprompt.export.evaluation_report import (
    bundle_inputs,
    retrieval_gain,
    run_evaluation,
    write_report,
)
from tests.perf._report import write_section


def main() -> int:
    t0 = time.perf_counter()
    bundle = ensure_bundle(demo_config(seed=0), progress=True)
    t_bundle = time.perf_counter() - t0
    metrics = json.loads((bundle / "metrics.json").read_text())
    parity = json.loads((bundle / "parity.json").read_text())
    val, base = metrics["val"], metrics["val_unaligned"]

    t1 = time.perf_counter()
    report = run_evaluation(bundle_inputs(bundle, seed=0), ["soft_knn", "ridge", "mlp"])
    t_eval = time.perf_counter() - t1
    with tempfile.TemporaryDirectory() as tmp:
        write_report(report, Path(tmp))
        report_md = (Path(tmp) / "report.md").read_text()

    gain = retrieval_gain(report.retrieval)
    medians = report.pathways.groupby("method")["r2"].median()
    best = report.pathways.sort_values("r2", ascending=False).iloc[0]
    lines = [
        f"SYNTHETIC cohort, untrained `tiny` tile encoder, demo bundle `{bundle.name}` "
        f"({'reused from the bundle cache' if t_bundle < 1 else f'built in {t_bundle:.0f} s'}; "
        f"evaluation {t_eval:.1f} s). Numbers say the machinery learns; they say nothing about "
        "real tissue.",
        "",
        f"- Retrieval, mean Recall@{{1,5,10}} over both directions: aligned "
        f"{gain['mean_recall']:.3f}, unaligned baseline {gain['mean_recall_baseline']:.3f}, "
        f"chance {gain['mean_recall_random']:.3f}: **{gain['gain_vs_baseline']:.1f}x** the "
        f"unaligned baseline, {gain['gain_vs_random']:.1f}x chance.",
        "- Per-Hallmark R2 (5-fold CV by patient), median over 50 sets: "
        + ", ".join(f"{m} {v:.3f}" for m, v in medians.items())
        + f"; best {best['gene_set']} ({best['method']}) {best['r2']:.3f}.",
        f"- Alignment training: {metrics['n_train_patients']} train / "
        f"{metrics['n_val_patients']} held-out patients (split by patient), best epoch "
        f"{metrics['best_epoch']} of {metrics['epochs_run']}, {metrics['train_seconds']:.1f} s; "
        f"held-out Recall@1/@5 {val['recall@1']:.3f} / {val['recall@5']:.3f} against "
        f"{base['recall@1']:.3f} / {base['recall@5']:.3f} unaligned and "
        f"{val['chance@5']:.3f} chance@5.",
        "- ONNX parity against torch (max abs error, min cosine; tolerance 1e-4, 0.9999): "
        + "; ".join(
            f"{name} {rec['max_abs_err']:.1e} ({rec['min_cosine']:.7f}, "
            f"{'passed' if rec['passed'] else 'FAILED'})"
            for name, rec in sorted(parity.items())
        ),
        "",
        "<details><summary>full evaluation report</summary>",
        "",
        # Demoted below this section's `##`, so a rerun replaces the whole section.
        "\n".join("##" + ln if ln.startswith("#") else ln for ln in report_md.splitlines()),
        "",
        "</details>",
    ]
    write_section("Evaluation (SYNTHETIC cohort)", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
