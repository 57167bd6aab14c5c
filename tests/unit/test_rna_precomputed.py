"""The second RNA path: a table of precomputed RNA embeddings (sample id -> vector) stands in
for the RNA encoder in alignment training (`train --rna-embeddings`) and in reference building
(`reference build --rna-embeddings --rna-head`). SYNTHETIC cohort and embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from histoprompt.core.modelspec import ModelCard
from histoprompt.export.cli import app
from histoprompt.export.errors import TrainingError
from histoprompt.export.rna_table import read_rna_embeddings, rows_for

runner = CliRunner()


def test_table_reader_refuses_duplicates_text_and_nan(tmp_path: Path) -> None:
    good = tmp_path / "good.csv"
    good.write_text("sample_id,e0,e1\na,1,2\nb,3,4\n")
    table = read_rna_embeddings(good)
    assert table.index.tolist() == ["a", "b"] and table.dtypes.iloc[0] == np.float32
    np.testing.assert_array_equal(rows_for(table, ["b", "a"], "t"), [[3, 4], [1, 2]])
    with pytest.raises(TrainingError, match="1 of 2 samples have no row"):
        rows_for(table, ["a", "zz"], "t")
    for name, text, match in (
        ("dup.csv", "sample_id,e0\na,1\na,2\n", "more than once"),
        ("text.csv", "sample_id,e0,label\na,1,x\n", "numeric"),
        ("nan.csv", "sample_id,e0\na,\n", "NaN"),
    ):
        (tmp_path / name).write_text(text)
        with pytest.raises(TrainingError, match=match):
            read_rna_embeddings(tmp_path / name)


def test_train_and_reference_from_precomputed_rna_embeddings(tmp_path: Path) -> None:
    from helpers.cohort_files import write_cohort_files

    from histoprompt.export.cohort import CohortConfig, make_cohort
    from histoprompt.export.encoder_specs import encoder_spec

    cohort = make_cohort(CohortConfig(n_patients=16, min_tiles=4, max_tiles=6, seed=3))
    dim = encoder_spec("null").embed_dim
    rng = np.random.default_rng(1)
    # SYNTHETIC tile embeddings: only their shape matters here
    inputs = write_cohort_files(
        cohort, tmp_path, lambda slide: rng.normal(size=(len(slide.tiles), dim)).astype(np.float32)
    )
    # SYNTHETIC "RNA model run elsewhere": a fixed random projection of the expression
    proj = np.random.default_rng(0).normal(size=(cohort.expression.shape[1], 24))
    vectors = cohort.expression @ proj / np.sqrt(proj.shape[0])
    table = pd.DataFrame(vectors, columns=[f"e{i}" for i in range(24)])
    table.insert(0, "sample_id", list(cohort.patient_ids))
    table.to_parquet(tmp_path / "rna.parquet", index=False)
    bundle = tmp_path / "bundle"
    args = ["train", *inputs, "--out", str(bundle)]
    args += ["--rna-embeddings", str(tmp_path / "rna.parquet"), "--epochs", "3", "--synthetic"]
    args += ["--encoder", "null"]  # the cheapest tile encoder to export: this is about RNA
    result = runner.invoke(app, [*args, "--licence", "tiny=none (SYNTHETIC)"])
    assert result.exit_code == 0, result.output
    assert (bundle / "rna_head.onnx").is_file() and not (bundle / "rna_embed.onnx").exists()
    parity = json.loads((bundle / "parity.json").read_text())
    assert parity["rna_head"]["passed"] and parity["predictor"]["passed"]
    card = ModelCard.model_validate_json((bundle / "model_card.json").read_text())
    assert card.rna_encoder == "precomputed" and card.methods == ("predictor", "soft_knn")
    assert card.training is not None and card.training.rna_source.startswith("precomputed:")
    assert any(w.role == "rna_embeddings" and w.sha256 for w in card.weights)
    assert card.licences == {"tiny": "none (SYNTHETIC)"}

    ref_args = ["reference", "build", "--expression", str(tmp_path / "expr.parquet")]
    ref_args += ["--rna-embeddings", str(tmp_path / "rna.parquet")]
    ref_args += ["--rna-head", str(bundle / "rna_head.onnx"), "--out", str(tmp_path / "refs")]
    built = runner.invoke(app, [*ref_args, "--name", "pre", "--synthetic"])
    assert built.exit_code == 0, built.output
    assert "16 samples" in built.output and "E=64" in built.output
    half = runner.invoke(app, [*ref_args[:-4], "--out", str(tmp_path / "x")])
    assert half.exit_code == 2 and "go together" in half.output


def test_train_without_an_rna_side_says_what_to_pass(tmp_path: Path) -> None:
    """The UNTRAINED tiny MLP is the demo's: outside it, it must be asked for by name."""
    from helpers.cohort_files import cohort_args

    from histoprompt.export.cohort import CohortConfig, make_cohort, write_expression

    cohort = make_cohort(CohortConfig(n_patients=4, min_tiles=2, max_tiles=3, seed=0))
    write_expression(cohort, tmp_path / "expr.parquet")
    (tmp_path / "slides.csv").write_text("slide_id,patient_id\n")
    (tmp_path / "emb").mkdir()
    args = ["train", *cohort_args(tmp_path), "--out", str(tmp_path / "b")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--rna-encoder DIR" in result.output and "--rna-encoder tiny" in result.output
