"""RNA reference DB: build checks, content-hash versioning, local round trip (SYNTHETIC data)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from histoprompt.core.errors import NotFoundError
from histoprompt.core.genesets import load_hallmark
from histoprompt.core.reference import GeneOrderError, ReferenceDB, ReferenceDbError
from histoprompt.core.reference_build import build_reference, check_gene_order, read_table
from histoprompt.core.reference_store import load_reference, load_reference_uri, save_reference
from histoprompt.core.reference_synthetic import (
    SyntheticReferenceInputs,
    linear_embed_fn,
    synthetic_reference_inputs,
)
from histoprompt.core.ssgsea import ssgsea


@pytest.fixture(scope="module")
def inputs() -> SyntheticReferenceInputs:
    return synthetic_reference_inputs(120, n_genes=1500, seed=1)


def _build(inputs: SyntheticReferenceInputs, **kw: Any) -> ReferenceDB:
    genes = list(inputs.expression.columns)
    return build_reference(
        inputs.expression,
        inputs.metadata,
        linear_embed_fn(len(genes), 16),
        genes,
        name="syn-test",
        synthetic=True,
        **kw,
    )


def test_build_stores_unit_embeddings_and_hallmark_scores(inputs: SyntheticReferenceInputs) -> None:
    ref = _build(inputs)
    assert ref.embeddings.shape == (120, 16) and ref.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ref.embeddings, axis=1), 1.0, rtol=1e-5)
    # the stored Hallmark scores are ssGSEA of the stored expression, set by set
    name = inputs.program_sets[1]
    cols = ref.gene_index.resolve(load_hallmark()[name]).indices
    np.testing.assert_allclose(ref.hallmark_scores[name], ssgsea(ref.expression, [cols])[:, 0])
    # the latent that drives a set is what its score reads (SYNTHETIC sanity)
    r = np.corrcoef(inputs.latents[:, 1], ref.hallmark_scores[name])[0, 1]
    assert r > 0.8
    assert list(ref.metadata["sample_id"]) == list(inputs.expression.index)
    assert set(ref.manifest.hallmark_sets) | set(ref.manifest.hallmark_skipped) == set(
        load_hallmark()
    )


def test_version_is_a_content_hash(inputs: SyntheticReferenceInputs) -> None:
    a, b = _build(inputs), _build(inputs)
    assert a.version == b.version and len(a.version) == 12
    changed = inputs.expression.copy()
    changed.iloc[0, 0] += 1.0
    c = build_reference(
        changed,
        inputs.metadata,
        linear_embed_fn(changed.shape[1], 16),
        list(changed.columns),
        name="syn-test",
    )
    assert c.version != a.version


def test_float16_storage_halves_the_bytes(inputs: SyntheticReferenceInputs) -> None:
    ref = _build(inputs, expression_dtype="float16")
    assert ref.expression.dtype == np.float16
    assert ref.manifest.expression_dtype == "float16"


def test_local_round_trip(tmp_path: Path, inputs: SyntheticReferenceInputs) -> None:
    ref = _build(inputs)
    where = save_reference(ref, tmp_path)
    assert where == tmp_path / "syn-test" / ref.version
    back = load_reference(tmp_path, "syn-test")
    assert back.version == ref.version
    np.testing.assert_array_equal(back.embeddings, ref.embeddings)
    np.testing.assert_array_equal(back.expression, ref.expression)
    pd.testing.assert_frame_equal(back.hallmark_scores, ref.hallmark_scores)
    assert back.genes == ref.genes
    assert load_reference_uri(str(where)).version == ref.version
    assert load_reference_uri(str(tmp_path / "syn-test")).version == ref.version


def test_tampered_file_is_detected(tmp_path: Path, inputs: SyntheticReferenceInputs) -> None:
    where = save_reference(_build(inputs), tmp_path)
    (where / "embeddings.npy").write_bytes((where / "embeddings.npy").read_bytes()[:-4] + b"xxxx")
    with pytest.raises(ReferenceDbError, match="manifest hash"):
        load_reference(where)


def test_missing_reference(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no reference named"):
        load_reference(tmp_path, "nope")
    with pytest.raises(NotFoundError):
        load_reference(tmp_path)


def test_nan_in_expression_is_rejected(inputs: SyntheticReferenceInputs) -> None:
    bad = inputs.expression.copy()
    bad.iloc[3, 7] = np.nan
    with pytest.raises(ReferenceDbError, match="NaN/inf values in 1 samples"):
        _build(type(inputs)(bad, inputs.metadata, inputs.latents, inputs.program_sets))


def test_gene_order_mismatch_is_a_clear_error() -> None:
    enc = ["A", "B", "C", "D"]
    assert check_gene_order(["a", "B", "c", "D"], enc) is None
    with pytest.raises(GeneOrderError, match="1 missing"):
        check_gene_order(["A", "B", "C"], enc)
    with pytest.raises(GeneOrderError, match="1 extra"):
        check_gene_order(["A", "B", "C", "E"], enc)
    with pytest.raises(GeneOrderError, match="first difference at column 0"):
        check_gene_order(["B", "A", "C", "D"], enc)
    perm = check_gene_order(["B", "A", "C", "D"], enc, reorder=True)
    assert perm is not None and perm.tolist() == [1, 0, 2, 3]


def test_reorder_builds_the_same_reference(inputs: SyntheticReferenceInputs) -> None:
    shuffled = inputs.expression.iloc[:, ::-1]
    genes = list(inputs.expression.columns)
    ref = build_reference(
        shuffled, inputs.metadata, linear_embed_fn(len(genes), 16), genes, name="s", reorder=True
    )
    assert ref.version == _build(inputs).version
    np.testing.assert_array_equal(ref.expression, inputs.expression.to_numpy())


def test_metadata_must_cover_samples(inputs: SyntheticReferenceInputs) -> None:
    meta = inputs.metadata.iloc[1:]
    with pytest.raises(ReferenceDbError, match="metadata lacks 1 of 120"):
        _build(type(inputs)(inputs.expression, meta, inputs.latents, inputs.program_sets))


def test_read_table_formats(tmp_path: Path, inputs: SyntheticReferenceInputs) -> None:
    expr = inputs.expression.iloc[:5, :20]
    expr.reset_index().to_parquet(tmp_path / "e.parquet")
    expr.reset_index().to_csv(tmp_path / "e.csv", index=False)
    for f in ("e.parquet", "e.csv"):
        back = read_table(tmp_path / f)
        assert list(back.index) == list(expr.index)
        np.testing.assert_allclose(back.to_numpy(), expr.to_numpy(), rtol=1e-6)
    with pytest.raises(ReferenceDbError, match="unsupported"):
        (tmp_path / "e.xlsx").write_text("x")
        read_table(tmp_path / "e.xlsx")


def test_h5ad_without_anndata_says_what_to_install(tmp_path: Path) -> None:
    try:
        import anndata  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("anndata is installed; the missing-extra message cannot show")
    (tmp_path / "x.h5ad").write_bytes(b"")
    with pytest.raises(ReferenceDbError, match=r"histoprompt-core\[h5ad\]"):
        read_table(tmp_path / "x.h5ad")


def test_read_table_h5ad(tmp_path: Path, inputs: SyntheticReferenceInputs) -> None:
    anndata = pytest.importorskip("anndata", reason="the h5ad extra is not installed")
    expr = inputs.expression.iloc[:5, :20]
    anndata.AnnData(
        X=expr.to_numpy(dtype=np.float32),
        obs=pd.DataFrame(index=[str(i) for i in expr.index]),
        var=pd.DataFrame(index=[str(c) for c in expr.columns]),
    ).write_h5ad(tmp_path / "e.h5ad")
    back = read_table(tmp_path / "e.h5ad")
    assert back.index.name == "sample_id"
    assert list(back.index) == [str(i) for i in expr.index]
    assert list(back.columns) == [str(c) for c in expr.columns]
    np.testing.assert_allclose(back.to_numpy(), expr.to_numpy(), rtol=1e-6)
