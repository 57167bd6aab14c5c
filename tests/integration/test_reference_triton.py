"""`histoprompt-export reference build --triton`: embeddings through a real Triton rna_embed-shaped
model, reference written to and read back from SeaweedFS S3 (SYNTHETIC expression)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from typer.testing import CliRunner

from histoprompt.core.reference_store import load_reference_s3
from histoprompt.core.reference_synthetic import synthetic_reference_inputs
from histoprompt.core.s3 import make_minio
from histoprompt.stack import StackHandle

pytestmark = pytest.mark.integration

MODEL = "itest_rna_linear"
N_GENES, DIM, SEED = 800, 24, 3

CONFIG = f"""
name: "{MODEL}"
backend: "python"
max_batch_size: 64
input [ {{ name: "EXPRESSION" data_type: TYPE_FP32 dims: [ {N_GENES} ] }} ]
output [ {{ name: "RNA_EMBEDDING" data_type: TYPE_FP32 dims: [ {DIM} ] }} ]
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "n_genes" value: {{ string_value: "{N_GENES}" }} }}
parameters {{ key: "embed_dim" value: {{ string_value: "{DIM}" }} }}
parameters {{ key: "seed" value: {{ string_value: "{SEED}" }} }}
"""


@pytest.fixture(scope="module")
def rna_model(stack: StackHandle, repo_root: Path) -> str:
    src = repo_root / "tests" / "integration" / "assets" / "prompting_models" / MODEL
    target = stack.model_repository / MODEL
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "config.pbtxt").write_text(CONFIG)
    with grpcclient.InferenceServerClient(stack.triton_grpc) as client:
        client.load_model(MODEL)
        assert client.is_model_ready(MODEL)
    return MODEL


def test_build_through_triton_into_s3(
    stack: StackHandle, rna_model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from histoprompt.export.reference_cli import app

    inputs = synthetic_reference_inputs(150, n_genes=N_GENES, seed=9)  # > one Triton batch
    inputs.expression.reset_index().to_parquet(tmp_path / "expr.parquet")
    inputs.metadata.to_parquet(tmp_path / "meta.parquet")
    (tmp_path / "genes.txt").write_text("\n".join(inputs.expression.columns))
    monkeypatch.setenv("HISTOPROMPT_ENV_FILE", str(stack.env_file))
    bucket = stack.settings.models_bucket
    res = CliRunner().invoke(
        app,
        [
            "build",
            "--expression", str(tmp_path / "expr.parquet"),
            "--metadata", str(tmp_path / "meta.parquet"),
            "--triton", stack.triton_grpc,
            "--triton-model", rna_model,
            "--genes", str(tmp_path / "genes.txt"),
            "--name", "itest-triton",
            "--out", f"s3://{bucket}",
            "--synthetic",
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    ref = load_reference_s3(make_minio(stack.settings), bucket, "itest-triton")
    assert f"s3://{bucket}/references/itest-triton/{ref.version}/" in res.output
    weights = np.random.default_rng(SEED).normal(size=(N_GENES, DIM)) / np.sqrt(N_GENES)
    raw = inputs.expression.to_numpy(np.float32) @ weights.astype(np.float32)
    expected = raw / np.linalg.norm(raw, axis=1, keepdims=True)
    np.testing.assert_allclose(ref.embeddings, expected, rtol=1e-4, atol=1e-5)
    assert ref.manifest.synthetic and ref.n_samples == 150
    assert list(ref.metadata["cancer_type"]) == list(inputs.metadata["cancer_type"])
