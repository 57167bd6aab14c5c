"""`histoprompt-export reference build` with ONNX Runtime on an rna_embed-shaped ONNX file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from histoprompt.core.reference_store import load_reference
from histoprompt.core.reference_synthetic import synthetic_reference_inputs


def _rna_embed_onnx(path: Path, n_genes: int, dim: int, seed: int = 0) -> np.ndarray:
    """An UNTRAINED linear rna_embed: EXPRESSION fp32 [-1, G] -> RNA_EMBEDDING fp32 [-1, E]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(seed).normal(size=(n_genes, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["EXPRESSION", "W"], ["RNA_EMBEDDING"])],
        "rna_embed",
        [helper.make_tensor_value_info("EXPRESSION", TensorProto.FLOAT, [None, n_genes])],
        [helper.make_tensor_value_info("RNA_EMBEDDING", TensorProto.FLOAT, [None, dim])],
        [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return w


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    inputs = synthetic_reference_inputs(40, n_genes=1200, seed=5)
    genes = list(inputs.expression.columns)
    _rna_embed_onnx(tmp_path / "rna_embed.onnx", len(genes), 16)
    (tmp_path / "gene_contract.json").write_text(json.dumps({"genes": genes}))
    inputs.expression.reset_index().to_parquet(tmp_path / "expr.parquet")
    inputs.metadata.to_csv(tmp_path / "meta.csv", index=False)
    shuffled = inputs.expression.iloc[:, ::-1]
    shuffled.reset_index().to_parquet(tmp_path / "shuffled.parquet")
    bad = inputs.expression.copy()
    bad.iloc[2, 3] = np.nan
    bad.reset_index().to_parquet(tmp_path / "nan.parquet")
    return {p.stem: p for p in tmp_path.iterdir()}


def _run(args: list[str]):  # type: ignore[no-untyped-def]
    from histoprompt.export.reference_cli import app

    return CliRunner().invoke(app, args)


def test_build_with_onnx_runtime(tmp_path: Path, files: dict[str, Path]) -> None:
    out = tmp_path / "refs"
    res = _run(
        [
            "build",
            "--expression",
            str(files["expr"]),
            "--metadata",
            str(files["meta"]),
            "--rna-onnx",
            str(files["rna_embed"]),
            "--name",
            "syn",
            "--out",
            str(out),
            "--synthetic",
        ]
    )
    assert res.exit_code == 0, res.output
    assert "40 samples x 1200 genes, E=16" in res.output and "SYNTHETIC" in res.output
    ref = load_reference(out, "syn")
    # embeddings are the ONNX model's output, L2-normalised
    import onnxruntime as ort

    sess = ort.InferenceSession(str(files["rna_embed"]), providers=["CPUExecutionProvider"])
    raw = sess.run(None, {"EXPRESSION": ref.expression.astype(np.float32)})[0]
    np.testing.assert_allclose(
        ref.embeddings, raw / np.linalg.norm(raw, axis=1, keepdims=True), rtol=1e-4, atol=1e-5
    )
    assert set(ref.metadata.columns) >= {"sample_id", "cancer_type", "cohort"}
    show = _run(["show", str(out / "syn")])
    assert show.exit_code == 0 and json.loads(show.output)["version"] == ref.version


def test_gene_order_and_nan_errors(tmp_path: Path, files: dict[str, Path]) -> None:
    base = ["build", "--rna-onnx", str(files["rna_embed"]), "--out", str(tmp_path / "r")]
    res = _run([*base, "--expression", str(files["shuffled"])])
    assert res.exit_code == 2 and "another order" in res.output and "--reorder" in res.output
    res = _run([*base, "--expression", str(files["shuffled"]), "--reorder"])
    assert res.exit_code == 0, res.output
    res = _run([*base, "--expression", str(files["nan"])])
    assert res.exit_code == 2 and "NaN" in res.output


def test_needs_an_encoder(tmp_path: Path, files: dict[str, Path]) -> None:
    res = _run(["build", "--expression", str(files["expr"]), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--rna-onnx" in res.output
